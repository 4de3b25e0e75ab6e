"""The one module that talks to MLflow: one run per pipeline execution, opened by train, closed by export.

When the tracking server cannot be reached, nothing is lost and training goes on: each call that fails is
appended to an outbox (``.segpipe/mlflow_outbox.jsonl``) under a local run id, and the outbox is replayed in
order by the next tracking call that reaches the server (any later stage) or by ``segpipe sync-tracking``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import time
import uuid
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
STATE_DIR = Path(".segpipe")
OUTBOX = STATE_DIR / "mlflow_outbox.jsonl"
RUN_IDS = STATE_DIR / "mlflow_run_ids.json"  # local run id -> server run id, once the outbox got through
PACKAGES = ("torch", "torchvision", "mlflow", "dvc", "prefect", "onnxruntime", "numpy", "segpipe")
# fail fast instead of MLflow's default of minutes of retries: the outbox keeps what could not be sent
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def tracking_uri(params: TrackingParams) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's SQLite file (made absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.default_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


@functools.cache
def _client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


def mlflow_client(params: TrackingParams):
    """The mlflow module and a client for the store, one per store (opening SQLite takes seconds)."""
    telemetry_off()
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)
    import mlflow

    return mlflow, _client_for(tracking_uri(params))


@contextmanager
def _fluent_store(params: TrackingParams) -> Iterator[Any]:
    """mlflow's fluent API pointed at the store for one block. ``mlflow.set_tracking_uri`` also writes
    MLFLOW_TRACKING_URI into the environment, which would send every later run of this process (a served flow,
    a sweep's trials) to this project's store, so the variable is restored afterwards."""
    mlflow, _ = mlflow_client(params)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(params))
    try:
        yield mlflow
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


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
    for key in ("SEGPIPE_PARENT_RUN_ID", "SEGPIPE_TRIAL"):
        if os.environ.get(key):
            tags["mlflow.parentRunId" if key == "SEGPIPE_PARENT_RUN_ID" else "segpipe.trial"] = os.environ[key]
    return tags


# --- delivery: every operation is a JSON-able dict, executed now or kept in the outbox ---------------------

def _run_ids() -> dict[str, str]:
    return json.loads(RUN_IDS.read_text()) if RUN_IDS.is_file() else {}


def _execute(params: TrackingParams, op: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param

    _, client = mlflow_client(params)
    ids = _run_ids()
    run_id = ids.get(op.get("run_id", ""), op.get("run_id", ""))
    kind = op["op"]
    if kind == "create_run":
        experiment = client.get_experiment_by_name(op["experiment"])
        if experiment is None:
            local_store = tracking_uri(params).startswith("sqlite:")
            location = Path("mlartifacts").resolve().as_uri() if local_store else None
            experiment_id = client.create_experiment(op["experiment"], artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        run = client.create_run(experiment_id, run_name=op.get("run_name"), tags=op["tags"],
                                start_time=op["time"])
        items = sorted(op["params"].items())
        for start in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in items[start:start + 100]])
        ids[op["local_id"]] = run.info.run_id
        STATE_DIR.mkdir(exist_ok=True)
        write_json(RUN_IDS, ids)
    elif kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, float(v), op["time"], op["step"]) for k, v in op["values"].items()])
    elif kind == "artifacts":
        for path in op["paths"]:
            if Path(path).is_file():
                client.log_artifact(run_id, path, op.get("folder"))
    elif kind == "status":
        client.update_run(run_id, status=op["status"])
    elif kind == "models":
        _log_models(params, run_id, op)
    else:
        raise ValueError(f"unknown tracking operation {kind}")


def _any_size_signature(example: Any) -> Any:
    """A model signature from an example (``input`` and named outputs) whose first dimension and any spatial ones
    are free (-1), like the exported model's dynamic axes: NCHW logits, or N detections with N x 1 x H x W masks."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(array: Any, name: str) -> TensorSpec:
        shape = tuple(size if axis == 1 else -1 for axis, size in enumerate(array.shape))
        return TensorSpec(array.dtype, shape, name)

    outputs = [spec(example[name], name) for name in example.files if name != "input"]
    return ModelSignature(inputs=Schema([spec(example["input"], "images")]), outputs=Schema(outputs))


def _log_models(params: TrackingParams, run_id: str, op: dict[str, Any]) -> None:
    import numpy as np
    import onnx
    import torch

    example = np.load(op["example"])
    signature = _any_size_signature(example)
    with _fluent_store(params) as mlflow, mlflow.start_run(run_id=run_id, log_system_metrics=False):
        mlflow.onnx.log_model(onnx.load(op["onnx"]), name="onnx_model", signature=signature,
                              registered_model_name=op["registered_model"], pip_requirements=op["onnx_requirements"],
                              save_as_external_data=False)
        model = torch.load(op["pytorch"], weights_only=False)
        # Pickle on purpose: the pt2 format freezes the input size, while these models take any size. MLflow
        # warns about pickle on every call; the README says to load pickled models only from runs you trust.
        with _quiet_logger("mlflow.pytorch"):
            mlflow.pytorch.log_model(model, name="pytorch_model", signature=signature,
                                     serialization_format="pickle", pip_requirements=op["torch_requirements"])


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger's warnings for the duration of a block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unreachable(exc: Exception) -> bool:
    """Errors that mean 'the server is not there right now' (connection refused, timeouts, 5xx)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, MlflowException) and any(
        word in str(exc) for word in ("Connection", "connection", "Max retries", "timed out", "503", "502", "500"))


def _queue(op: dict[str, Any]) -> None:
    STATE_DIR.mkdir(exist_ok=True)
    with OUTBOX.open("a") as handle:
        handle.write(json.dumps(op) + "\n")


def flush(params: TrackingParams) -> int:
    """Replay the outbox in order; return how many operations were delivered (stops at the first failure)."""
    if not OUTBOX.is_file():
        return 0
    pending = [json.loads(line) for line in OUTBOX.read_text().splitlines() if line.strip()]
    for done, op in enumerate(pending):
        try:
            _execute(params, op)
        except Exception as exc:  # noqa: BLE001 - decide below whether it is an outage
            if not _unreachable(exc):
                raise
            OUTBOX.write_text("".join(json.dumps(o) + "\n" for o in pending[done:]))
            return done
    OUTBOX.unlink()
    return len(pending)


def _submit(params: Params, op: dict[str, Any]) -> None:
    """Deliver ``op`` now (after anything still queued), or queue it if the server cannot be reached."""
    tracking = params.tracking
    try:
        if OUTBOX.is_file():
            flush(tracking)
        if OUTBOX.is_file():  # still unreachable: queue behind the rest, to keep the order
            _queue(op)
            return
        _execute(tracking, op)
    except Exception as exc:  # noqa: BLE001 - decide below whether it is an outage
        if not _unreachable(exc):
            raise
        if not OUTBOX.is_file():
            print(f"tracking: {tracking_uri(tracking)} unreachable ({type(exc).__name__}); keeping MLflow calls in "
                  f"{OUTBOX} until it is back (`segpipe sync-tracking`)")
        _queue(op)


# --- the calls the stages make ----------------------------------------------------------------------------

def start_run(params: Params, device: str, run_name: str | None = None) -> str:
    """Open the pipeline's MLflow run with params and lineage tags; return its id ('' when tracking is off).

    The id returned is a local one; it maps to the server's run id once the run was created there.
    """
    if not params.tracking.enabled:
        return ""
    local_id = f"local-{uuid.uuid4().hex}"
    _submit(params, {"op": "create_run", "local_id": local_id, "experiment": params.tracking.experiment,
                     "run_name": run_name, "tags": lineage_tags(device), "time": int(time.time() * 1000),
                     "params": flatten(params.model_dump(mode="json"))})
    return local_id


def continue_run(params: Params, run_id: str | None, device: str, run_name: str | None = None) -> str:
    """The run of a resumed stage (``run_id``, marked running again), or a new one."""
    if run_id:
        reopen(params, run_id)
        return run_id
    return start_run(params, device, run_name)


def server_run_id(run_id: str) -> str | None:
    """The MLflow run id behind a local id (None while the run is still only in the outbox)."""
    return _run_ids().get(run_id)


def reopen(params: Params, run_id: str) -> None:
    """Mark a run as running again (a resumed training continues the same run)."""
    if run_id:
        _submit(params, {"op": "status", "run_id": run_id, "status": "RUNNING"})


def log_metrics(params: Params, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics (with ``step`` for per-epoch curves)."""
    if run_id:
        _submit(params, {"op": "metrics", "run_id": run_id, "values": {k: float(v) for k, v in metrics.items()},
                         "step": step or 0, "time": int(time.time() * 1000)})


def log_artifacts(params: Params, run_id: str, paths: list[Path], folder: str | None = None) -> None:
    """Upload files to the run (missing ones are skipped)."""
    if run_id:
        _submit(params, {"op": "artifacts", "run_id": run_id, "paths": [str(Path(p).resolve()) for p in paths],
                         "folder": folder})


def log_models(params: Params, run_id: str, files: dict[str, str], requirements: dict[str, list[str]]) -> None:
    """Log the ONNX model (registered under ``tracking.registered_model``) and the PyTorch model."""
    if run_id:
        _submit(params, {"op": "models", "run_id": run_id, **files, **requirements,
                         "registered_model": params.tracking.registered_model})


def finish(params: Params, run_id: str, status: str = "FINISHED") -> None:
    if run_id:
        _submit(params, {"op": "status", "run_id": run_id, "status": status})


def save_run_id(run_id: str, uri: str, path: Path = RUN_FILE) -> None:
    """Write both ids of the run: segpipe's local one and MLflow's (the one the console and the UI show)."""
    write_json(path, {
        "run_id": run_id, "mlflow_run_id": server_run_id(run_id), "tracking_uri": uri,
        "about": "run_id is segpipe's local id (it keys the tracking outbox); mlflow_run_id is the run's id in "
                 "MLflow at tracking_uri, null while the run still waits in .segpipe/mlflow_outbox.jsonl (once "
                 "delivered, .segpipe/mlflow_run_ids.json maps one to the other)",
    })


def load_run_id(path: Path = RUN_FILE) -> str:
    return json.loads(path.read_text())["run_id"] if path.is_file() else ""
