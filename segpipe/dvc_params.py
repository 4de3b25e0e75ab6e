"""The params keys that dvc.yaml's stages depend on, checked against params.yaml before DVC looks for them.

DVC refuses to run a stage whose listed params key is missing from params.yaml (after deleting that stage's
outputs); segpipe fills defaults, so an older or trimmed params.yaml would pass segpipe's checks and still fail
in DVC. Checking first turns that into one clear line that says what to add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segpipe.errors import SegpipeError
from segpipe.params import Params


def listed_params(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the params.yaml keys (dotted) that dvc.yaml lists for it."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    listed: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for entry in stage.get("params", []) or []:
            if isinstance(entry, str):
                listed.setdefault(name, []).append(entry)
            elif isinstance(entry, dict) and "params.yaml" in entry:
                listed.setdefault(name, []).extend(entry["params.yaml"] or [])
    return listed


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_listed_params(data: dict[str, Any], params: Params, dvc_yaml: Path, source: str = "params.yaml") -> None:
    """Raise naming the first key that a stage depends on but ``data`` lacks, with its default value."""
    defaults = params.model_dump(mode="json")
    for stage, keys in listed_params(dvc_yaml).items():
        for key in keys:
            if not _lookup(data, key)[0]:
                _, value = _lookup(defaults, key)
                shown = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
                raise SegpipeError(f"{source}: '{key}' is missing, and dvc.yaml's stage '{stage}' depends on it; "
                                   f"add it (the default is {shown.strip().removesuffix('...').strip()})")
