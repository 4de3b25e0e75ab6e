"""A queue of JSON operations on disk that loses nothing: what could not be delivered now waits here, in order.

- One operation per line of ``mlflow_outbox.jsonl``; every rewrite of the file is atomic (temp file, rename), and
  every change happens under a file lock, so processes that share the folder (a sweep's trials) never interleave.
- A line that does not parse (a ``kill -9`` in the middle of writing it) is reported and set aside in
  ``mlflow_outbox.rejected.jsonl`` with the reason; every other operation still waits its turn. So is an operation
  the receiver refuses for good.
- The files an operation names are copied into ``outbox-files/<op id>/`` when it is queued, so a later run cannot
  replace them before they are delivered.

The folder is ``.segpipe`` in the project, or ``$SEGPIPE_STATE_DIR``: a run in a temporary folder (a sweep trial
under ``dvc exp run --temp``) queues into the project's folder, which outlives it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segpipe.fsutil import write_atomic

STATE_ENV = "SEGPIPE_STATE_DIR"


def state_dir() -> Path:
    """Where segpipe keeps its state between runs: ``$SEGPIPE_STATE_DIR``, else ``.segpipe`` in the project."""
    return Path(os.environ.get(STATE_ENV) or ".segpipe")


def new_op_id() -> str:
    return uuid.uuid4().hex


class Outbox:
    """The operations waiting in ``folder`` (the state folder unless given)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or state_dir()
        self.path = self.folder / "mlflow_outbox.jsonl"
        self.rejected = self.folder / "mlflow_outbox.rejected.jsonl"
        self.files = self.folder / "outbox-files"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock for the block (one process at a time reads or changes the queue)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "outbox.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def exists(self) -> bool:
        return self.path.is_file()

    def pending(self) -> list[dict[str, Any]]:
        """The queued operations in order (call under :meth:`locked`); lines that do not parse are set aside."""
        if not self.path.is_file():
            return []
        ops, torn = [], []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                op = json.loads(line)
            except json.JSONDecodeError:
                torn.append((number, line))
                continue
            ops.append(op) if isinstance(op, dict) and "op" in op else torn.append((number, line))
        for number, line in torn:
            self.set_aside({"line": line}, f"line {number} of {self.path} is not a whole operation (cut off "
                                             f"while it was written?)")
        if torn:
            self._rewrite(ops)
        return ops

    def append(self, op: dict[str, Any], file_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """Queue ``op`` (call under :meth:`locked`), first copying the files its ``file_keys`` name (a path or a list
        of paths each) into the outbox; return the operation as queued."""
        op = {**op, "op_id": op.get("op_id") or new_op_id()}
        for key in file_keys:
            if key in op:
                op[key] = self._keep(op[key], self.files / op["op_id"])
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(op) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return op

    def _keep(self, value: str | list[str], folder: Path) -> str | list[str]:
        if isinstance(value, list):
            return [self._keep(item, folder / str(index)) for index, item in enumerate(value)]
        source = Path(value)
        if not source.is_file():
            return value  # nothing to keep: delivering it will skip it, as it would have now
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, folder / source.name)
        return str((folder / source.name).resolve())

    def delivered(self, ops: list[dict[str, Any]], index: int) -> None:
        """Operation ``index`` of ``ops`` (the queue as :meth:`pending` read it) is done: drop it and its files."""
        self._rewrite(ops[index + 1:])
        shutil.rmtree(self.files / str(ops[index].get("op_id")), ignore_errors=True)

    def reject(self, ops: list[dict[str, Any]], index: int, reason: str) -> None:
        """Operation ``index`` was refused for good: set it aside with ``reason`` so the rest can go on."""
        self.set_aside(ops[index], reason)
        self._rewrite(ops[index + 1:])

    def set_aside(self, entry: dict[str, Any], reason: str) -> None:
        """Keep ``entry`` (an operation, or a line that was not one) in the rejected file with ``reason``."""
        print(f"segpipe tracking: warning: {reason}; set aside in {self.rejected}", file=sys.stderr, flush=True)
        with self.rejected.open("a") as handle:
            handle.write(json.dumps({"reason": reason, **entry}) + "\n")

    def _rewrite(self, ops: list[dict[str, Any]]) -> None:
        if ops:
            write_atomic(self.path, lambda p: p.write_text("".join(json.dumps(op) + "\n" for op in ops)))
        else:
            self.path.unlink(missing_ok=True)
