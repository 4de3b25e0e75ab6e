"""The one module that talks to MLflow: one run per pipeline execution, opened by train, closed by export.

When the tracking server cannot be reached, nothing is lost and training goes on: each call that fails is
appended to an outbox (:mod:`segpipe.outbox`, ``.segpipe/mlflow_outbox.jsonl``) under a local run id, and the
outbox is replayed in order by the next tracking call that reaches the server (any later stage) or by
``segpipe sync-tracking``; every call can be replayed twice without being logged twice.
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
from segpipe.errors import SegpipeError
from segpipe.fsutil import write_json
from segpipe.outbox import Outbox, state_dir
from segpipe.stage import telemetry_off

RUN_FILE = Path("models/mlflow_run.json")
LOCAL_ID_TAG = "segpipe.local_id"  # finds the run of a local id again, so that creating it twice makes one run
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

def _run_ids_file() -> Path:
    return state_dir() / "mlflow_run_ids.json"  # local run id -> server run id, once the outbox got through


def _run_ids() -> dict[str, str]:
    path = _run_ids_file()
    return json.loads(path.read_text()) if path.is_file() else {}


def _experiment_id(params: TrackingParams, client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    local_store = tracking_uri(params).startswith("sqlite:")
    location = Path("mlartifacts").resolve().as_uri() if local_store else None
    return client.create_experiment(name, artifact_location=location)


def _create_run(params: TrackingParams, client: Any, op: dict[str, Any]) -> None:
    """Create the run, or find the one an interrupted replay already created (tagged with the local id)."""
    from mlflow.entities import Param

    experiment_id = _experiment_id(params, client, op["experiment"])
    found = client.search_runs([experiment_id], f"tags.`{LOCAL_ID_TAG}` = '{op['local_id']}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        experiment_id, run_name=op.get("run_name"), tags={**op["tags"], LOCAL_ID_TAG: op["local_id"]},
        start_time=op["time"]).info.run_id
    items = sorted(op["params"].items())
    for start in range(0, len(items), 100):  # logging the same params again is allowed
        client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in items[start:start + 100]])
    ids = {**_run_ids(), op["local_id"]: run_id}
    write_json(_run_ids_file(), ids)


def _execute(params: TrackingParams, op: dict[str, Any]) -> None:
    """Carry out one operation. Each is idempotent, so one that a kill interrupted can simply run again: a run is
    found by its local id, the same metric (key, step, time, value) is stored once, an artifact replaces itself,
    a model already logged for the run is not logged again."""
    from mlflow.entities import Metric

    _, client = mlflow_client(params)
    run_id = _run_ids().get(op.get("run_id", ""), op.get("run_id", ""))
    kind = op["op"]
    if kind == "create_run":
        _create_run(params, client, op)
    elif kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, float(v), op["time"], op["step"]) for k, v in op["values"].items()])
    elif kind == "artifacts":
        for path in op["paths"]:
            if Path(path).is_file():
                client.log_artifact(run_id, path, op.get("folder"))
    elif kind == "status":
        client.update_run(run_id, status=op["status"])
    elif kind == "models":
        _log_models(params, client, run_id, op)
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


def _logged_models(client: Any, run_id: str) -> dict[str, Any]:
    """The models already logged for ``run_id``, by name."""
    run = client.get_run(run_id)
    found = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    return {model.name: model for model in found if model.source_run_id == run_id}


def _log_models(params: TrackingParams, client: Any, run_id: str, op: dict[str, Any]) -> None:
    """The ONNX model (registered), the PyTorch model and its weights-only file; nothing is unpickled: the module
    is rebuilt from the weights-only checkpoint and its stored config."""
    import numpy as np
    import onnx

    from segpipe.trained_model import TrainedModel

    trained = TrainedModel.load(Path(op["weights"]), _cpu())  # weights only: a pickle of anything else is refused
    example = np.load(op["example"], allow_pickle=False)
    signature = _any_size_signature(example)
    logged = _logged_models(client, run_id)
    with _fluent_store(params) as mlflow, mlflow.start_run(run_id=run_id, log_system_metrics=False):
        if "onnx_model" not in logged:
            mlflow.onnx.log_model(onnx.load(op["onnx"]), name="onnx_model", signature=signature,
                                  registered_model_name=op["registered_model"],
                                  pip_requirements=op["onnx_requirements"], save_as_external_data=False)
        elif op["registered_model"] and not client.search_model_versions(
                f"name='{op['registered_model']}' and run_id='{run_id}'"):  # logged, then killed before registering
            mlflow.register_model(logged["onnx_model"].model_uri, op["registered_model"])
        if "pytorch_model" not in logged:
            # Pickle on purpose: the pt2 format freezes the input size, while these models take any size. MLflow
            # warns about pickle on every call; the README says how to load the weights-only file instead.
            with _quiet_logger("mlflow.pytorch"):
                mlflow.pytorch.log_model(trained.task.onnx_module(trained.model), name="pytorch_model",
                                         signature=signature, serialization_format="pickle",
                                         pip_requirements=op["torch_requirements"])
    client.log_artifact(run_id, op["weights"], "model_weights")  # torch.load(weights_only=True) reads it


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


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


def _refused_credentials(exc: Exception) -> bool:
    """The server is there but does not accept who we are (MLflow's basic auth: 401, or 403 for a user
    without the permission)."""
    text = str(exc)
    return any(word in text for word in ("401", "403", "Unauthorized", "UNAUTHENTICATED", "PERMISSION_DENIED"))


def _credentials_error(params: TrackingParams) -> SegpipeError:
    return SegpipeError(f"{tracking_uri(params)} refused the credentials: set MLFLOW_TRACKING_USERNAME and "
                        f"MLFLOW_TRACKING_PASSWORD to a user of the server; the calls wait in {Outbox().path}")


def _refusal(params: TrackingParams, op: dict[str, Any], exc: Exception) -> str:
    detail = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{tracking_uri(params)} refused a '{op.get('op')}' call ({type(exc).__name__}: {detail})"


FILE_KEYS = ("paths", "onnx", "weights", "example")  # what an operation names on disk, copied when it is queued


def _flush_locked(params: TrackingParams, outbox: Outbox) -> int:
    """Replay the queue in order until it is empty or the server drops out; return how many were delivered. A call
    the server refuses for good is set aside (reported) and the rest go on; refused credentials stop with an
    error and keep everything queued."""
    ops, delivered = outbox.pending(), 0
    for index, op in enumerate(ops):
        try:
            _execute(params, op)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if _unreachable(exc):
                return delivered
            if _refused_credentials(exc):
                raise _credentials_error(params) from None
            outbox.reject(ops, index, _refusal(params, op, exc))
            continue
        outbox.delivered(ops, index)
        delivered += 1
    return delivered


def flush(params: TrackingParams) -> int:
    """Replay the outbox (``segpipe sync-tracking``); return how many operations were delivered."""
    outbox = Outbox()
    if not outbox.exists():
        return 0
    with outbox.locked():
        return _flush_locked(params, outbox)


def pending_count() -> int:
    """How many operations wait in the outbox."""
    outbox = Outbox()
    if not outbox.exists():
        return 0
    with outbox.locked():
        return len(outbox.pending())


def _submit(params: Params, op: dict[str, Any]) -> None:
    """Deliver ``op`` now (after anything still queued), or queue it if the server cannot be reached; a call the
    server refuses for good is reported and set aside, never lost silently."""
    tracking, outbox = params.tracking, Outbox()
    if not tracking.enabled:
        return
    with outbox.locked():
        if outbox.exists():
            _flush_locked(tracking, outbox)
        if outbox.exists():  # still unreachable: queue behind the rest, to keep the order
            outbox.append(op, FILE_KEYS)
            return
        try:
            _execute(tracking, op)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if _refused_credentials(exc) and not _unreachable(exc):
                outbox.append(op, FILE_KEYS)
                raise _credentials_error(tracking) from None
            if not _unreachable(exc):
                outbox.set_aside(op, _refusal(tracking, op, exc))
                return
            print(f"tracking: {tracking_uri(tracking)} unreachable ({type(exc).__name__}); keeping MLflow calls in "
                  f"{outbox.path} until it is back (`segpipe sync-tracking`)")
            outbox.append(op, FILE_KEYS)


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
    """Log the ONNX model (registered under ``tracking.registered_model``) and the PyTorch model; ``files``:
    ``onnx``, ``weights`` (a weights-only model.pt) and ``example`` (an npz of an input and its outputs)."""
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
