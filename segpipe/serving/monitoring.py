"""The server's Prometheus metrics, summed over its worker processes (prometheus-client's multiprocess mode:
each process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``; ``/metrics`` reads them all)."""

from __future__ import annotations

import os

from segpipe.errors import SegpipeError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests and errors by route and code, request and inference latency, requests in flight, model load time."""

    def __init__(self) -> None:
        if not os.environ.get(MULTIPROC_ENV):
            raise SegpipeError(f"{MULTIPROC_ENV} is not set: start the server with `segpipe serve`")
        from prometheus_client import Counter, Gauge, Histogram, values

        if values.ValueClass is values.MutexValue:  # imported before the variable was set: counts would be per process
            raise SegpipeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
        self.requests = Counter("segpipe_requests", "HTTP requests answered, by route, method and status code",
                                ["route", "method", "code"], registry=None)
        self.errors = Counter("segpipe_request_errors", "requests answered with a 4xx or 5xx status, by route and code",
                              ["route", "code"], registry=None)
        self.latency = Histogram("segpipe_request_seconds", "time from request to response, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=None)
        self.inference = Histogram("segpipe_inference_seconds", "time the model took per image (decode to response)",
                                   buckets=LATENCY_BUCKETS, registry=None)
        self.in_flight = Gauge("segpipe_requests_in_flight", "requests being answered now, over all workers",
                               multiprocess_mode="livesum", registry=None)
        self.model_load = Gauge("segpipe_model_load_seconds", "seconds the slowest worker took to load the model",
                                multiprocess_mode="max", registry=None)

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        self.requests.labels(route, method, str(code)).inc()
        if code >= 400:
            self.errors.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics of every worker process in Prometheus' text format, with its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
