"""The one module that talks to MLflow: one run per pipeline execution, opened by train, closed by export."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from segpipe.config import Params, TrackingParams
from segpipe.fsutil import write_json
from segpipe.stage import telemetry_off

RUN_FILE = Path("models/mlflow_run.json")
PACKAGES = ("torch", "torchvision", "mlflow", "dvc", "prefect", "onnxruntime", "numpy", "segpipe")


def tracking_uri(params: TrackingParams) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's SQLite file (made absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.default_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


@functools.cache
def _client_for(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow, mlflow.MlflowClient(uri)


def _client(params: TrackingParams):
    """The mlflow module and a client for the tracking store (one per store: opening SQLite takes seconds)."""
    telemetry_off()
    return _client_for(tracking_uri(params))


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path("mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested params as {'train.optimizer.lr': '0.001', ...}."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(data) if isinstance(data, list | tuple) else str(data)}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def lineage_tags(device: str) -> dict[str, str]:
    """Git commit and dirty flag, data hashes from dvc.lock, package versions and the device."""
    tags = {"git.commit": _git("rev-parse", "HEAD") or "unknown",
            "git.dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(), "device": device}
    lock = Path("dvc.lock")
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage, info in stages.items():
            for out in info.get("outs", []):
                tags[f"data.{stage}.{out['path']}"] = out.get("md5", "")
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags


def start_run(params: Params, device: str, run_name: str | None = None) -> str:
    """Create the pipeline's MLflow run with params and lineage tags; return its id ('' when tracking is off)."""
    if not params.tracking.enabled:
        return ""
    mlflow, client = _client(params.tracking)
    experiment = _experiment_id(client, params.tracking.experiment, mlflow.get_tracking_uri())
    run = client.create_run(experiment, run_name=run_name, tags=lineage_tags(device))
    items = sorted(flatten(params.model_dump(mode="json")).items())
    from mlflow.entities import Param

    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in items[start:start + 100]])
    return run.info.run_id


def reopen(params: Params, run_id: str) -> None:
    """Mark a run as running again (a resumed training continues the same run)."""
    if not run_id:
        return
    _, client = _client(params.tracking)
    client.update_run(run_id, status="RUNNING")


def log_metrics(params: Params, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics (with ``step`` for per-epoch curves)."""
    if not run_id:
        return
    from mlflow.entities import Metric

    _, client = _client(params.tracking)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=batch)


def log_artifacts(params: Params, run_id: str, paths: list[Path], folder: str | None = None) -> None:
    """Upload files to the run (missing ones are skipped)."""
    if not run_id:
        return
    _, client = _client(params.tracking)
    for path in paths:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path), folder)


def finish(params: Params, run_id: str, status: str = "FINISHED") -> None:
    if not run_id:
        return
    _, client = _client(params.tracking)
    client.set_terminated(run_id, status=status)


@contextmanager
def active_run(params: Params, run_id: str) -> Iterator[Any]:
    """The mlflow module with ``run_id`` active, for the model-logging helpers that need a fluent run."""
    mlflow, _ = _client(params.tracking)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        yield mlflow


def save_run_id(run_id: str, uri: str, path: Path = RUN_FILE) -> None:
    write_json(path, {"run_id": run_id, "tracking_uri": uri})


def load_run_id(path: Path = RUN_FILE) -> str:
    return json.loads(path.read_text())["run_id"]
