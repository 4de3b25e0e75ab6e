"""``segpipe serve``: an exported model behind HTTP (FastAPI + uvicorn) with Prometheus metrics.

:mod:`~segpipe.serving.config` says what to serve, :mod:`~segpipe.serving.uploads` turns a request into pixels or a
4xx, :mod:`~segpipe.serving.monitoring` holds the metrics, :mod:`~segpipe.serving.app` the routes, and
:mod:`~segpipe.serving.server` starts uvicorn with its workers.
"""
