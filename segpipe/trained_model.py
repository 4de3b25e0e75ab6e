"""The trained model as the evaluate and export stages and ``predict`` see it, and the metrics file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segpipe import checkpoint
from segpipe.data.canonical import Categories
from segpipe.errors import SegpipeError
from segpipe.tasks import get_task
from segpipe.tasks.base import Task
from segpipe.transforms import build, input_spec


@dataclass
class TrainedModel:
    """A model restored from models/model.pt with its task and what it needs around it."""

    model: nn.Module
    task: Task
    categories: Categories
    normalize: dict
    saved: dict

    @classmethod
    def load(cls, path: Path, device: torch.device) -> TrainedModel:
        if not path.is_file():
            raise SegpipeError(f"{path}: not found; run the train stage first (dvc repro train)")
        saved = checkpoint.load(path)
        if not isinstance(saved, dict) or not {"model", "config", "categories", "normalize"} <= saved.keys():
            raise SegpipeError(f"{path}: {_what_it_is(saved)}, not a trained segpipe model; pass the train stage's "
                               f"models/model.pt or the export stage's export/model.onnx")
        task = get_task(saved["config"].get("task", "semantic"))
        model = task.build_model(saved["config"])
        checkpoint.load_into(model, saved["model"], str(path), "the file was changed after training: train again")
        categories = Categories.load_json(saved["categories"])
        return cls(model.to(device).eval(), task, categories, saved["normalize"], saved)

    def input_transform(self) -> nn.Module:
        """uint8 NCHW -> normalised float, as in training."""
        return build(input_spec(self.normalize["mean"], self.normalize["std"]), self.categories.ignore_index)


def _what_it_is(saved: object) -> str:
    """What a checkpoint that is not a trained model holds, for the error that refuses it."""
    if isinstance(saved, dict) and "encoder" in saved:
        return "the pretrain stage's encoder (for model.weights: pretrained, or segpipe denoise)"
    if isinstance(saved, dict) and "fingerprint" in saved:
        return "a training checkpoint to resume from"
    return "not a model file segpipe wrote"


def metrics_json(metrics: dict[str, float]) -> str:
    return json.dumps({"test": metrics}, indent=2)
