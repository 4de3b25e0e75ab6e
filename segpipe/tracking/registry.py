"""Models in the MLflow registry: ``models:/<name>/<version>``, ``models:/<name>/latest`` or ``models:/<name>@<alias>``,
fetched as the ONNX file and its contract, the pair the export stage wrote."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.params import TrackingParams
from segpipe.tracking.connection import mlflow_client, tracking_uri

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[\w-]+))$")
ONNX_FILE, CONTRACT_FILE = "model.onnx", "model.json"
CONTRACT_ARTIFACT = "export/model.json"  # where the export stage logs the contract in its run


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version as fetched: the local ONNX file (its contract beside it) and where it came from."""

    onnx: Path
    name: str
    version: str
    run_id: str
    git_commit: str | None

    def lineage(self) -> dict[str, Any]:
        return {"registered_model": self.name, "model_version": self.version, "mlflow_run_id": self.run_id,
                "git_commit": self.git_commit}


def is_registry_uri(spec: str) -> bool:
    return spec.startswith("models:/")


def _version(client: Any, spec: str) -> Any:
    found = _URI.match(spec)
    if not found:
        raise SegpipeError(f"{spec}: not a registry model; write models:/<name>/<version>, models:/<name>/latest "
                           f"or models:/<name>@<alias>")
    name, version, alias = found["name"], found["version"], found["alias"]
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise SegpipeError(f"{spec}: the registry has no version of {name!r}")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, version)
    except SegpipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises MlflowException / RestException for unknown names
        raise SegpipeError(f"{spec}: not in the registry of {client.tracking_uri} "
                           f"({str(exc).splitlines()[0][:200]})") from None


def fetch_registered(params: TrackingParams, spec: str, dest: Path) -> RegisteredModel:
    """Download the registered ONNX model ``spec`` and the contract its run logged into ``dest`` (a fresh folder)."""
    mlflow, client = mlflow_client(params)
    version = _version(client, spec)
    run = client.get_run(version.run_id)
    dest.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(params)
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{version.name}/{version.version}",
                                                         dst_path=str(dest / "mlflow"), tracking_uri=uri))
    if not (model_dir / ONNX_FILE).is_file():
        raise SegpipeError(f"{spec}: version {version.version} holds no {ONNX_FILE}; register an ONNX model from "
                           f"segpipe's export stage")
    try:
        contract = Path(mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=CONTRACT_ARTIFACT,
                                                            dst_path=str(dest / "run"), tracking_uri=uri))
    except Exception as exc:  # noqa: BLE001 - a missing artifact is an MlflowException or an OSError by store
        raise SegpipeError(f"{spec}: its run {version.run_id} has no {CONTRACT_ARTIFACT} "
                           f"({str(exc).splitlines()[0][:200]}); serve a version logged by the export stage") from None
    shutil.move(model_dir / ONNX_FILE, dest / ONNX_FILE)
    shutil.move(contract, dest / CONTRACT_FILE)
    return RegisteredModel(dest / ONNX_FILE, version.name, str(version.version), version.run_id,
                           run.data.tags.get("git.commit"))
