"""What ``segpipe serve`` serves and within which limits: resolved once by the command, handed to every worker
process through one environment variable."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError

CONFIG_ENV = "SEGPIPE_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """The model file (ONNX, its contract beside it), where it came from, and the request limits."""

    model: str  # the local ONNX file
    source: str  # what the user passed to --model
    lineage: dict[str, Any] = field(default_factory=dict)  # registry name/version, MLflow run, git commit
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    queue: int = 32  # requests admitted per worker process (running or waiting); more get 503
    threads: int = 0  # threads per worker process for onnxruntime and torch (0: their own choice)

    def environment_value(self) -> str:
        """The value of :data:`CONFIG_ENV` that hands this config to the worker processes."""
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServeConfig:
        if CONFIG_ENV not in os.environ:
            raise SegpipeError(f"{CONFIG_ENV} is not set: start the server with `segpipe serve`")
        return cls(**json.loads(os.environ[CONFIG_ENV]))


def threads_per_worker(workers: int) -> int:
    """The cores shared out between the worker processes, so that two workers do not each start a thread per
    core and slow each other down."""
    return max(1, (os.cpu_count() or 1) // workers)


def local_model(spec: str) -> Path:
    """The ONNX file ``spec`` names, checked to be one (``serve`` runs exported models with their contract)."""
    path = Path(spec)
    if not path.is_file():
        raise SegpipeError(f"{spec}: model not found; pass export/model.onnx (run `dvc repro export` first) or "
                           f"models:/<name>/<version> from the MLflow registry")
    if path.suffix != ".onnx":
        raise SegpipeError(f"{spec}: serve runs exported ONNX models (export/model.onnx with its model.json); "
                           f"export this model with `dvc repro export`")
    return path.resolve()
