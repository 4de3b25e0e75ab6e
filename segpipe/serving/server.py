"""Start ``segpipe serve``: resolve the model (a file, or a registry version fetched into a scratch folder that is
removed on exit), check that it loads, and run uvicorn with its workers, metrics shared through files."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from segpipe.fsutil import environment
from segpipe.params import TrackingParams, load_params
from segpipe.serving.config import CONFIG_ENV, ServeConfig, local_model, threads_per_worker
from segpipe.serving.monitoring import MULTIPROC_ENV

LOOPBACK = "127.0.0.1"


def _log_config() -> dict:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["segpipe.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _tracking(params_path: Path) -> TrackingParams:
    return load_params(params_path).tracking if params_path.is_file() else TrackingParams()


def serve(spec: str, host: str = LOOPBACK, port: int = 8000, workers: int = 1, *, max_bytes: int, max_pixels: int,
          queue: int, params_path: Path = Path("params.yaml")) -> None:
    """Serve the model ``spec`` (an ONNX file, or ``models:/<name>/<version>`` / ``@<alias>`` from the registry of
    ``params_path``'s tracking settings) until interrupted."""
    from segpipe.predict import Predictor
    from segpipe.tracking.registry import fetch_registered, is_registry_uri

    with tempfile.TemporaryDirectory(prefix="segpipe-serve-") as scratch:
        if is_registry_uri(spec):
            registered = fetch_registered(_tracking(params_path), spec, Path(scratch, "model"))
            path, lineage = registered.onnx, registered.lineage()
        else:
            path, lineage = local_model(spec), {}
        predictor = Predictor.from_onnx(path)  # a model that cannot load is a one-line error before uvicorn starts
        config = ServeConfig(str(path), spec, lineage, max_bytes, max_pixels, queue, threads_per_worker(workers))
        print(f"serve: {spec} ({predictor.task.name}, {predictor.categories.num_classes} classes) on "
              f"http://{host}:{port} with {workers} worker(s) of {config.threads} thread(s): POST /predict, "
              f"GET /health /metadata /metrics",
              flush=True)
        del predictor
        metrics = Path(scratch, "metrics")
        metrics.mkdir()
        with environment({MULTIPROC_ENV: str(metrics), CONFIG_ENV: config.environment_value()}):
            import uvicorn  # the workers read both variables; prometheus_client reads the first on import

            uvicorn.run("segpipe.serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                        log_config=_log_config(), access_log=False, timeout_graceful_shutdown=5)
