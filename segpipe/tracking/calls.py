"""What each tracking operation does at the MLflow store. Every operation is a JSON-able dict, and each is
idempotent, so that one a kill interrupted can simply run again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segpipe.fsutil import write_json
from segpipe.params import TrackingParams
from segpipe.tracking.connection import fluent_store, mlflow_client, quiet_logger, tracking_uri
from segpipe.tracking.outbox import state_dir

LOCAL_ID_TAG = "segpipe.local_id"  # finds the run of a local id again, so that creating it twice makes one run


def run_ids_file(project: Path = Path(".")) -> Path:
    """Local run id -> server run id, for the runs the outbox got through (in ``project``'s state folder)."""
    return project / state_dir() / "mlflow_run_ids.json"


def run_ids(project: Path = Path(".")) -> dict[str, str]:
    path = run_ids_file(project)
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
    experiment_id = _experiment_id(params, client, op["experiment"])
    found = client.search_runs([experiment_id], f"tags.`{LOCAL_ID_TAG}` = '{op['local_id']}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        experiment_id, run_name=op.get("run_name"), tags={**op["tags"], LOCAL_ID_TAG: op["local_id"]},
        start_time=op["time"]).info.run_id
    _log_params(client, run_id, op["params"])
    ids = {**run_ids(), op["local_id"]: run_id}
    write_json(run_ids_file(), ids)


def _log_params(client: Any, run_id: str, values: dict[str, str]) -> None:
    """Log params in batches of 100 (logging the same value again is allowed)."""
    from mlflow.entities import Param

    items = sorted(values.items())
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in items[start:start + 100]])


def _log_restored_trial(params: TrackingParams, client: Any, parent: str, op: dict[str, Any]) -> None:
    """A child run of ``parent`` for a sweep trial that trained nothing (DVC restored its stages from the cache),
    unless the trial has one of its own; a kill halfway is finished on replay (found by the local id)."""
    from mlflow.entities import Metric

    experiment_id = client.get_run(parent).info.experiment_id
    found = trial_run(client, experiment_id, op["trial"])
    if found and found.data.tags.get(LOCAL_ID_TAG) != op["local_id"]:
        return
    run_id = found.info.run_id if found else client.create_run(
        experiment_id, run_name=op["trial"], start_time=op["time"],
        tags={"mlflow.parentRunId": parent, "segpipe.trial": op["trial"], "segpipe.restored_from_dvc_cache": "true",
              LOCAL_ID_TAG: op["local_id"]}).info.run_id
    _log_params(client, run_id, op["params"])
    client.log_batch(run_id, metrics=[Metric(k, float(v), op["time"], 0) for k, v in op["metrics"].items()])
    client.set_terminated(run_id)


def trial_run(client: Any, experiment: str, trial: str) -> Any | None:
    """The MLflow run of sweep trial ``trial`` (tagged ``segpipe.trial`` by its train stage), if any."""
    found = client.search_runs([experiment], f"tags.`segpipe.trial` = '{trial}'", max_results=1)
    return found[0] if found else None


def _tag_trial(client: Any, parent: str, op: dict[str, Any]) -> None:
    """Tag a trial's run with its study, number and state (a trial that died before training has none)."""
    run = trial_run(client, client.get_run(parent).info.experiment_id, op["trial"])
    if run is not None:
        for key, value in op["tags"].items():
            client.set_tag(run.info.run_id, key, value)


def execute(params: TrackingParams, op: dict[str, Any]) -> None:
    """Carry out one operation. Each is idempotent, so one that a kill interrupted can simply run again: a run is
    found by its local id, the same metric (key, step, time, value) is stored once, an artifact replaces itself,
    a model already logged for the run is not logged again."""
    from mlflow.entities import Metric

    _, client = mlflow_client(params)
    run_id = run_ids().get(op.get("run_id", ""), op.get("run_id", ""))
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
    elif kind == "params":
        _log_params(client, run_id, op["values"])
    elif kind == "models":
        _log_models(params, client, run_id, op)
    elif kind == "restored_trial":
        _log_restored_trial(params, client, run_id, op)
    elif kind == "tag_trial":
        _tag_trial(client, run_id, op)
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
    with fluent_store(params) as mlflow, mlflow.start_run(run_id=run_id, log_system_metrics=False):
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
            with quiet_logger("mlflow.pytorch"):
                mlflow.pytorch.log_model(trained.task.onnx_module(trained.model), name="pytorch_model",
                                         signature=signature, serialization_format="pickle",
                                         pip_requirements=op["torch_requirements"])
    client.log_artifact(run_id, op["weights"], "model_weights")  # torch.load(weights_only=True) reads it


def _cpu() -> Any:
    import torch

    return torch.device("cpu")

