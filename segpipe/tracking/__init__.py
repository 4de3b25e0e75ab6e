"""Everything segpipe records in MLflow goes through this package; no other module imports ``mlflow``. One run
per pipeline execution, opened by train and closed by export; a sweep's parent run holds its trials.

When the tracking server cannot be reached, nothing is lost and training goes on: each call that fails is
appended to an outbox (:mod:`segpipe.tracking.outbox`, ``.segpipe/mlflow_outbox.jsonl``) under a local run id, and
the outbox is replayed in order (:mod:`segpipe.tracking.replay`) by the next tracking call that reaches the server
(any later stage) or by ``segpipe sync-tracking``; every call can be replayed twice without being logged twice
(:mod:`segpipe.tracking.calls`). :mod:`segpipe.tracking.connection` holds the store and its errors,
:mod:`segpipe.tracking.lineage` what a run records about where it came from.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from segpipe.fsutil import write_json
from segpipe.params import Params
from segpipe.paths import MLFLOW_RUN
from segpipe.tracking.calls import run_ids, trial_run
from segpipe.tracking.connection import mlflow_client, tracking_uri
from segpipe.tracking.lineage import flatten, git_commit, lineage_tags
from segpipe.tracking.replay import flush, pending_count, submit

__all__ = ["continue_run", "finish", "flush", "load_run_id", "log_artifacts", "log_metrics",
           "log_models", "log_params", "log_restored_trial", "model_lineage", "pending_count", "recorded_run",
           "reopen", "save_run_id", "server_run_id", "start_run", "tag_trial", "tracking_uri", "trial_metrics"]


def new_local_id() -> str:
    """A run id that segpipe gives a run before the server does (it keys the run's calls in the outbox)."""
    return f"local-{uuid.uuid4().hex}"


def start_run(params: Params, device: str, run_name: str | None = None, tags: dict[str, str] | None = None) -> str:
    """Open the pipeline's MLflow run with params, lineage tags and ``tags``; return its id ('' when tracking is
    off).

    The id returned is a local one; it maps to the server's run id once the run was created there.
    """
    if not params.tracking.enabled:
        return ""
    local_id = new_local_id()
    submit(params, {"op": "create_run", "local_id": local_id, "experiment": params.tracking.experiment,
                    "run_name": run_name, "tags": {**lineage_tags(device), **(tags or {})},
                    "time": int(time.time() * 1000), "params": flatten(params.model_dump(mode="json"))})
    return local_id


def continue_run(params: Params, run_id: str | None, device: str, run_name: str | None = None,
                 tags: dict[str, str] | None = None) -> str:
    """The run of a resumed stage (``run_id``, marked running again), or a new one."""
    if run_id:
        reopen(params, run_id)
        return run_id
    return start_run(params, device, run_name, tags)


def server_run_id(run_id: str) -> str | None:
    """The MLflow run id behind a local id (None while the run is still only in the outbox)."""
    return run_ids().get(run_id)


def reopen(params: Params, run_id: str) -> None:
    """Mark a run as running again (a resumed training continues the same run)."""
    if run_id:
        submit(params, {"op": "status", "run_id": run_id, "status": "RUNNING"})


def log_metrics(params: Params, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics (with ``step`` for per-epoch curves)."""
    if run_id:
        submit(params, {"op": "metrics", "run_id": run_id, "values": {k: float(v) for k, v in metrics.items()},
                        "step": step or 0, "time": int(time.time() * 1000)})


def log_artifacts(params: Params, run_id: str, paths: list[Path], folder: str | None = None) -> None:
    """Upload files to the run (missing ones are skipped)."""
    if run_id:
        submit(params, {"op": "artifacts", "run_id": run_id, "paths": [str(Path(p).resolve()) for p in paths],
                        "folder": folder})


def log_params(params: Params, run_id: str, values: dict[str, object]) -> None:
    """Log params (as strings) to the run."""
    if run_id:
        submit(params, {"op": "params", "run_id": run_id, "values": {k: str(v) for k, v in values.items()}})


def log_models(params: Params, run_id: str, onnx: Path, weights: Path, example: dict[str, Any],
               requirements: dict[str, list[str]]) -> None:
    """Log the ONNX model (registered under ``tracking.registered_model``) and the PyTorch model, whose weights go
    as the weights-only file ``weights`` (delivering it never unpickles anything); ``example``: numpy arrays of an
    input (``input``) and the model's outputs, for the models' signature."""
    import numpy as np

    if not run_id or not params.tracking.enabled:
        return
    with tempfile.TemporaryDirectory(prefix="segpipe-example-") as staging:  # delivered or copied into the outbox
        saved = Path(staging) / "example.npz"
        np.savez(saved, **example)
        submit(params, {"op": "models", "run_id": run_id, "onnx": str(onnx.resolve()),
                        "weights": str(weights.resolve()), "example": str(saved), **requirements,
                        "registered_model": params.tracking.registered_model})


def log_restored_trial(params: Params, parent: str, trial: str, overrides: dict[str, object],
                       metrics: dict[str, float]) -> None:
    """Give a sweep trial that trained nothing (DVC restored it from its cache) a child run under ``parent`` with
    its overrides and metrics, unless it has one already."""
    if parent:
        submit(params, {"op": "restored_trial", "run_id": parent, "trial": trial, "local_id": new_local_id(),
                        "params": {k: str(v) for k, v in overrides.items()}, "metrics": metrics,
                        "time": int(time.time() * 1000)})


def tag_trial(params: Params, parent: str, trial: str, tags: dict[str, str]) -> None:
    """Tag the run of sweep trial ``trial`` (under ``parent``'s experiment) with ``tags``: its study, number, state."""
    if parent:
        submit(params, {"op": "tag_trial", "run_id": parent, "trial": trial, "tags": tags})


def trial_metrics(params: Params, trial: str) -> dict[str, float]:
    """The metrics that sweep trial ``trial``'s run holds on the tracking server (the test metrics its evaluate
    stage logged), empty when the server has no run of it yet."""
    _, client = mlflow_client(params.tracking)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    run = trial_run(client, experiment.experiment_id, trial) if experiment else None
    return dict(run.data.metrics) if run else {}


def finish(params: Params, run_id: str, status: str = "FINISHED") -> None:
    if run_id:
        submit(params, {"op": "status", "run_id": run_id, "status": status})


def save_run_id(run_id: str, uri: str, path: Path = MLFLOW_RUN) -> None:
    """Write both ids of the run: segpipe's local one and MLflow's (the one the console and the UI show)."""
    write_json(path, {
        "run_id": run_id, "mlflow_run_id": server_run_id(run_id), "tracking_uri": uri,
        "about": "run_id is segpipe's local id (it keys the tracking outbox); mlflow_run_id is the run's id in "
                 "MLflow at tracking_uri, null while the run still waits in .segpipe/mlflow_outbox.jsonl (once "
                 "delivered, .segpipe/mlflow_run_ids.json maps one to the other)",
    })


def load_run_id(path: Path = MLFLOW_RUN) -> str:
    return json.loads(path.read_text())["run_id"] if path.is_file() else ""


def recorded_run(project: Path) -> dict[str, str | None]:
    """The run that ``project``'s stages recorded: ``mlflow_run_id`` (None while it waits in the outbox) and
    ``tracking_uri``."""
    run_file = project / MLFLOW_RUN
    run = json.loads(run_file.read_text()) if run_file.is_file() else {}
    # a run restored from a DVC remote was delivered by another machine, whose outbox mapped the ids
    server_id = run_ids(project).get(run.get("run_id", "")) or run.get("mlflow_run_id")
    return {"mlflow_run_id": server_id, "tracking_uri": run.get("tracking_uri", "")}


def model_lineage(project: Path = Path(".")) -> dict[str, str | None]:
    """Where the model exported in ``project`` comes from, for its contract: the git commit and the MLflow run."""
    return {"git_commit": git_commit(), **recorded_run(project)}
