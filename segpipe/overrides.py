"""Dotted-key overrides of params.yaml (``train.optimizer.lr=0.001``), validated before anything runs."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from segpipe.errors import SegpipeError
from segpipe.fsutil import write_atomic
from segpipe.params import Params, parse_params, read_yaml


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


def _round_trip_yaml() -> YAML:
    """A ruamel.yaml that keeps comments, key order, quotes and flow style, and writes ``null`` as ``null``."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return rt


def _flow(value: Any) -> Any:
    """Lists and mappings given as override values, in flow style like the rest of params.yaml."""
    if isinstance(value, dict):
        node = CommentedMap((k, _flow(v)) for k, v in value.items())
    elif isinstance(value, list | tuple):
        node = CommentedSeq(_flow(v) for v in value)
    else:
        return value
    node.fa.set_flow_style()
    return node


def edit_params_text(text: str, overrides: dict[str, Any]) -> str:
    """``text`` with each dotted key set; every other line (comments, order, formatting) stays as it was."""
    rt = _round_trip_yaml()
    document = apply_overrides(rt.load(text) or CommentedMap(), {k: _flow(v) for k, v in overrides.items()})
    out = io.StringIO()
    rt.dump(document, out)
    return out.getvalue()


def write_overrides(params_path: Path, overrides: dict[str, Any]) -> Params:
    """Validate ``overrides`` against params.yaml and change only their lines in the file (as ``dvc exp run -S``)."""
    text = params_path.read_text()
    if not overrides:
        return parse_params(read_yaml(text) or {}, str(params_path))
    edited = edit_params_text(text, overrides)
    params = parse_params(read_yaml(edited) or {}, f"{params_path} with overrides")  # what the stages will read
    write_atomic(params_path, lambda p: p.write_text(edited))
    return params


def dvc_set_args(overrides: dict[str, Any]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run`` (values as YAML/JSON literals)."""
    args: list[str] = []
    for key, value in overrides.items():
        literal = value if isinstance(value, str) else _float_literal(value) if isinstance(value, float) else \
            json.dumps(value)
        args += ["-S", f"{key}={literal}"]
    return args


def _float_literal(value: float) -> str:
    """A float as YAML 1.1 reads it back as a float: ``1e-07`` is a string there, ``1.0e-07`` a number."""
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}" if exponent else text


class ParamsGuard:
    """The workspace params.yaml while a sweep's trials edit it (``dvc exp run -S`` writes their values there):
    the sweep notices an edit that is not its own, stops before the next trial would run with it, and puts the
    original file back at the end only when the user changed nothing meanwhile, in one atomic step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = path.read_text()
        self.expected = self.original  # what the file holds unless someone else edited it

    def check(self, before: str) -> None:
        """Raise if the file changed since the sweep last wrote it (nothing runs with edits it did not make)."""
        if self.path.read_text() != self.expected:
            raise SegpipeError(f"{self.path} was edited while the sweep ran; it stopped before {before} so that no "
                               f"trial runs with those edits, and your edits are kept")

    def trial_done(self) -> None:
        """Note what the trials just left in the file."""
        self.expected = self.path.read_text() if self.path.is_file() else ""

    def restore(self) -> str:
        """Put the original file back unless the user edited it during the sweep; return a warning when not."""
        current = self.path.read_text() if self.path.is_file() else ""
        if current == self.original:
            return ""
        if current != self.expected:
            keep = write_atomic(self.path.with_name(f"{self.path.name}.before-sweep.bak"),
                                lambda p: p.write_text(self.original))
            return (f"segpipe sweep: warning: {self.path} was edited during the sweep, so it was left as it is; "
                    f"the file as it was before the sweep is in {keep}")
        write_atomic(self.path, lambda p: p.write_text(self.original))
        return ""
