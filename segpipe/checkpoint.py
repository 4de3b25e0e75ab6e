"""Training checkpoints (one dict, saved atomically) and the final model file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


def mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """How ``state`` differs from ``model``'s own weights: layers of another shape, missing and unexpected ones."""
    own = model.state_dict()
    shapes = [f"{key} is {list(state[key].shape)} there but {list(value.shape)} here" for key, value in own.items()
              if key in state and tuple(state[key].shape) != tuple(value.shape)]
    missing = [f"{key} is missing" for key in own if key not in state]
    unexpected = [f"{key} is not in this model" for key in state if key not in own]
    return shapes + missing + unexpected


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, hint: str) -> None:
    """Load every tensor of ``state`` into ``model``: weights that do not fit (another width, class count or
    model) are an error naming the first mismatched layers, never a silent fresh start; so are weights that are
    not finite."""
    problems = mismatches(model, state)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SegpipeError(f"{source} does not fit this model: {'; '.join(problems[:3])}{more}; {hint}")
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise SegpipeError(f"{source} holds weights that are not finite (NaN or infinite) in {', '.join(broken[:3])}"
                           f"{' ...' if len(broken) > 3 else ''}; train again")
    model.load_state_dict(state)
