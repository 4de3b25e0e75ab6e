"""The routes of ``segpipe serve``: ``POST /predict`` answers what ``segpipe predict`` writes for the image,
``GET /health``, ``GET /metadata`` (the contract and the model's lineage) and ``GET /metrics`` (Prometheus).

One onnxruntime session per worker process, reused by every request; images run one at a time on one thread
(onnxruntime uses the cores itself), behind a bounded queue: a request that finds ``queue`` others admitted is
answered 503 at once. Every refusal is a 4xx with a one-line JSON ``error``, every failure a 500 without a traceback
(the traceback goes to the server's log), and every request one access-log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from segpipe.data.imageio import set_pixel_limit
from segpipe.predict import Predictor
from segpipe.rendering import encode_png
from segpipe.serving.config import ServeConfig
from segpipe.serving.monitoring import Metrics, exposition
from segpipe.serving.uploads import RequestError, decoded, image_bytes

log = logging.getLogger("segpipe.serve")
FORMATS = {"png": "the label map PNG that predict writes as <stem>.png",
           "overlay": "the colour overlay that predict writes as <stem>_overlay.png",
           "json": "class shares (semantic), COCO results (instance), segments_info and PNG (panoptic)"}
DEFAULT_FORMAT = {"semantic": "png", "instance": "json", "panoptic": "json"}
ROUTES = ("/predict", "/health", "/metadata", "/metrics")


class ModelService:
    """The loaded model and its queue: what every request of this worker process shares."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)  # decoding and rendering use torch
        started = time.perf_counter()
        self.predictor = Predictor.from_onnx(Path(config.model), config.threads or None)
        self.load_seconds = time.perf_counter() - started
        metrics.model_load.set(self.load_seconds)
        self.contract = self.predictor.contract
        self.config, self.metrics = config, metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="segpipe-model")
        self.admitted = 0  # requests of this process reading their body, waiting or running

    def answer(self, data: bytes, name: str, fmt: str) -> Response:
        """Decode, run and render one image (on the model thread)."""
        started = time.perf_counter()
        image = decoded(data, name)
        task, categories = self.predictor.task, self.predictor.categories
        rendered = task.render(self.predictor.outputs(image.pixels), image.pixels, categories, self.predictor.output)
        headers = {"X-Segpipe-Repairs": "; ".join(image.repairs)} if image.repairs else {}
        if fmt == "json":
            body, media = json.dumps(task.response(rendered, categories)).encode(), "application/json"
        else:
            body, media = encode_png(rendered.label_map if fmt == "png" else rendered.overlay), "image/png"
        self.metrics.inference.observe(time.perf_counter() - started)
        return Response(body, media_type=media, headers=headers)

    def metadata(self) -> dict[str, Any]:
        import onnxruntime

        return {"model": {"source": self.config.source, "file": self.config.model, "task": self.predictor.task.name,
                          "load_seconds": round(self.load_seconds, 4)},
                "lineage": {**self.contract.get("lineage", {}), **self.config.lineage},
                "contract": self.contract,
                "runtime": {"onnxruntime": onnxruntime.__version__, "providers": ["CPUExecutionProvider"],
                            "threads": self.config.threads,
                            "segpipe": metadata.version("segpipe")},
                "limits": {"max_bytes": self.config.max_bytes, "max_pixels": self.config.max_pixels,
                           "queue": self.config.queue},
                "formats": dict(FORMATS),
                "default_format": DEFAULT_FORMAT[self.predictor.task.name]}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers={"Retry-After": "1"} if status == 503 else None)


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The app for ``config`` (default: the one ``segpipe serve`` put in the environment); loads the model."""
    config = config or ServeConfig.from_environment()
    set_pixel_limit(config.max_pixels, "--max-pixels")
    metrics = Metrics()
    service = ModelService(config, metrics)
    app = FastAPI(title="segpipe serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def monitor(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
        except RequestError as exc:
            response = _error(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - a failure is a one-line 500 for the client, a traceback in the log
            log.exception("%s %s failed", request.method, request.url.path)
            response = _error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                                   if str(exc) else f"internal error: {type(exc).__name__}")
        finally:
            metrics.in_flight.dec()
        seconds = time.perf_counter() - started
        route = request.url.path if request.url.path in ROUTES else "other"
        metrics.observe(route, request.method, response.status_code, seconds)
        client = f"{request.client.host}:{request.client.port}" if request.client else "-"
        query = f"?{request.url.query}" if request.url.query else ""
        log.info('%s "%s %s%s" %d %.1f ms', client, request.method, request.url.path, query, response.status_code,
                 1000 * seconds)
        return response

    @app.post("/predict")
    async def predict(request: Request, format: str | None = None) -> Response:  # noqa: A002 - the query's name
        fmt = format or DEFAULT_FORMAT[service.predictor.task.name]
        if fmt not in FORMATS:
            raise RequestError(400, f"format={fmt} is not one of {', '.join(FORMATS)}")
        if service.admitted >= config.queue:
            raise RequestError(503, f"busy: {config.queue} requests are already queued in this worker (--queue); "
                                    f"retry later")
        service.admitted += 1
        try:
            data, name = await image_bytes(request, config.max_bytes)
            return await asyncio.get_running_loop().run_in_executor(service.executor, service.answer, data, name, fmt)
        finally:
            service.admitted -= 1

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "task": service.predictor.task.name, "queued": service.admitted}

    @app.get("/metadata")
    async def model_metadata() -> dict[str, Any]:
        return service.metadata()

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, media = exposition()
        return Response(body, media_type=media)

    return app
