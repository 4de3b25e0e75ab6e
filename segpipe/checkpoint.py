"""Training checkpoints (one dict, saved atomically) and the final model file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from segpipe.errors import SegpipeError
from segpipe.fsutil import atomic_path


def save(state: dict[str, Any], path: str | Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # a file object, not the temporary path: torch names the archive's root folder after the file, and
        # the random temporary name would make identical checkpoints differ byte for byte
        torch.save(state, handle)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors, numbers, strings, lists and dicts only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unpickling failure is the same user error
        raise SegpipeError(f"{path}: not a readable segpipe checkpoint ({exc}); delete it to start over") from None


def fingerprint(*parts: Any, files: tuple[Path, ...] = ()) -> str:
    """A hash of JSON-able parts and file contents: a checkpoint resumes only into the same run."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()
