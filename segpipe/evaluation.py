"""Evaluate a trained model on the test split at the original image resolution."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from segpipe import checkpoint
from segpipe.config import EvaluateParams
from segpipe.data.canonical import Categories, read_manifest
from segpipe.data.dataset import DecodingSegmentation
from segpipe.errors import SegpipeError
from segpipe.inference import infer
from segpipe.metrics import BoundaryF1, ConfusionMatrix
from segpipe.progress import track
from segpipe.training import build_model
from segpipe.transforms import build, input_spec


@dataclass
class TrainedModel:
    """A model restored from models/model.pt with what it needs around it."""

    model: nn.Module
    categories: Categories
    normalize: dict
    saved: dict

    @classmethod
    def load(cls, path: Path, device: torch.device) -> TrainedModel:
        if not path.is_file():
            raise SegpipeError(f"{path}: not found; run the train stage first (dvc repro train)")
        saved = checkpoint.load(path)
        model = build_model(saved["config"])
        model.load_state_dict(saved["model"])
        categories = Categories.load_json(saved["categories"])
        return cls(model.to(device).eval(), categories, saved["normalize"], saved)

    def input_transform(self) -> nn.Module:
        """uint8 NCHW -> normalised float, as in training."""
        return build(input_spec(self.normalize["mean"], self.normalize["std"]), self.categories.ignore_index)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: pd.DataFrame
    confusion: torch.Tensor
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@torch.no_grad()
def evaluate(trained: TrainedModel, manifest_path: Path, params: EvaluateParams, device: torch.device,
             workers: int = 2) -> Evaluation:
    """Metrics over every image of ``manifest_path`` at its original size, plus the first few predictions."""
    manifest = read_manifest(manifest_path)
    if manifest.empty:
        raise SegpipeError(f"{manifest_path}: the split is empty; give split.test a share above 0")
    categories = trained.categories
    num_classes = categories.num_classes
    matrix = ConfusionMatrix(num_classes, categories.ignore_index)
    boundary = BoundaryF1(num_classes, categories.ignore_index, params.boundary_tolerance)
    to_input = trained.input_transform()
    loader = DataLoader(DecodingSegmentation(manifest), batch_size=1, num_workers=workers)
    samples = []
    for batch in track(loader, len(manifest), "evaluate"):
        images = to_input(batch["image"].to(device))
        logits = infer(trained.model, images, params.mode, num_classes, params.window, params.stride)
        prediction, target = logits.argmax(1).cpu(), batch["semantic"].long()
        matrix.update(prediction, target)
        boundary.update(prediction, target)
        if len(samples) < params.overlays:
            samples.append((batch["image"][0], target[0], prediction[0]))
    metrics = {**matrix.compute(), "boundary_f1": boundary.compute(), "images": len(manifest)}
    per = matrix.per_class()
    per_class = pd.DataFrame({
        "class": categories.names, "iou": per["iou"].numpy(), "accuracy": per["accuracy"].numpy(),
        "dice": per["dice"].numpy(), "support_pixels": per["support"].numpy().astype("int64"),
        "present": per["present"].numpy(),
    })
    return Evaluation(metrics, per_class, matrix.matrix, samples)


def summary_line(metrics: dict[str, float]) -> str:
    keys = ("miou", "pixel_accuracy", "mean_accuracy", "fwiou", "mean_dice", "boundary_f1")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def metrics_json(metrics: dict[str, float]) -> str:
    return json.dumps({"test": metrics}, indent=2)
