"""The one model factory: a model config (stored in ``model.pt``) and ``model.weights`` to a model, through the
catalog (:mod:`segpipe.catalog`). This is the only place that applies ``model.weights``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segpipe import catalog
from segpipe.checkpoint import load_into
from segpipe.errors import SegpipeError
from segpipe.models.encoders import load_encoder


def build_model(config: dict[str, Any], weights: str | None = None) -> nn.Module:
    """The model ``config`` describes, started as ``weights`` says: None from scratch, 'backbone' or 'full'
    (published weights), 'pretrained' (the pretrain stage's encoder) or the path of a checkpoint."""
    entry = catalog.model_entry(config["name"])
    problem = catalog.weights_problem(entry.name, weights)
    if problem:
        raise SegpipeError(f"model.weights: {problem}")
    model = catalog.load_object(entry.builder)(config, catalog.published_weights(weights))
    start = catalog.weights_file(weights)
    if weights == catalog.ENCODER:
        load_encoder(model, start, entry.name)
    elif start is not None:
        load_weights(model, start)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a segpipe checkpoint or a plain state dict (``weights_only``) into ``model``; every tensor must fit."""
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"model.weights: {path} is not a file; give a checkpoint path, 'backbone', 'full', "
                           f"'{catalog.ENCODER}' or null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user error
        raise SegpipeError(f"{path}: cannot be read as a weights-only checkpoint ({exc})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegpipeError(f"model.weights: {path} holds no model weights (a segpipe model.pt or a state dict)")
    load_into(model, state, f"model.weights {path}", "check model.name, model.unet and the classes it was "
                                                    "trained on")
