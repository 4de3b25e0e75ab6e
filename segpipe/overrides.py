"""Dotted-key overrides of params.yaml (``train.optimizer.lr=0.001``), validated before anything runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from segpipe.config import Params, parse_params
from segpipe.errors import SegpipeError
from segpipe.fsutil import write_atomic


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key set; unknown sections are caught by validation."""
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SegpipeError(f"override '{dotted}': '{key}' is a value, not a section")
            node = child
        node[leaf] = value
    return out


def write_overrides(params_path: Path, overrides: dict[str, Any]) -> Params:
    """Validate ``overrides`` against params.yaml and write the result (as ``dvc exp run -S`` would)."""
    data = yaml.safe_load(params_path.read_text()) or {}
    merged = apply_overrides(data, overrides)
    params = parse_params(merged, f"{params_path} with overrides")
    if overrides:
        write_atomic(params_path, lambda p: p.write_text(yaml.safe_dump(merged, sort_keys=False)))
    return params


def dvc_set_args(overrides: dict[str, Any]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run`` (values as YAML/JSON literals)."""
    args: list[str] = []
    for key, value in overrides.items():
        literal = value if isinstance(value, str) else json.dumps(value)
        args += ["-S", f"{key}={literal}"]
    return args
