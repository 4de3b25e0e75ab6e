"""The lineage a run records: params flattened to keys, the git commit, the data hashes of dvc.lock, package
versions, the device, and the sweep a trial belongs to."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

PACKAGES = ("torch", "torchvision", "mlflow", "dvc", "prefect", "onnxruntime", "numpy", "segpipe")


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


def git_commit() -> str | None:
    """The commit checked out here (None outside a git repository)."""
    return _git("rev-parse", "HEAD") or None


def lineage_tags(device: str) -> dict[str, str]:
    """Git commit and dirty flag, data hashes from dvc.lock, package versions and the device."""
    tags = {"git.commit": git_commit() or "unknown",
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

