"""The task interface: everything that differs between semantic, instance and panoptic segmentation.

A :class:`Task` is three smaller interfaces, each the only thing its user sees:

- :class:`Learner`, what training needs (autoencoder pretraining is a learner only): it describes its model in a
  config that ``model.pt`` keeps (the catalog's builder rebuilds it anywhere), makes batches, gives a criterion of
  named loss terms and the validation evaluator, and names the objective that picks the best epoch, stops early
  and ranks sweep trials (``val_<objective>``);
- :class:`segpipe.onnx_export.Exportable`, what export needs: its ONNX outputs and how to compare onnxruntime with
  PyTorch (the export-and-parity skeleton is :func:`segpipe.onnx_export.export_checked`);
- :class:`segpipe.rendering.Renderer`, what ``predict`` needs: how one image's outputs become files.

On top, a task gives the evaluate stage its test evaluator (:mod:`segpipe.evaluation` runs the one loop).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from segpipe.data.canonical import Categories
from segpipe.evaluation import Evaluator, TestEvaluator
from segpipe.models import build_model
from segpipe.onnx_export import Exportable
from segpipe.params import Params
from segpipe.rendering import Renderer

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel


class Learner(ABC):
    """What training needs: the model, its batches, loss and validation."""

    name: str
    objective: str  # a key of the validation metrics; the run maximises val_<objective>
    objective_label: str  # for people, e.g. "val mIoU"
    with_instances: bool = False  # samples carry instance masks, boxes and labels

    @abstractmethod
    def model_config(self, params: Params, categories: Categories) -> dict[str, Any]:
        """What it takes to rebuild the model (stored in model.pt); holds ``task``."""

    def build_model(self, config: dict[str, Any], weights: str | None = None) -> nn.Module:
        """The model described by ``config``; ``weights`` as in ``model.weights`` (the catalog's builder)."""
        return build_model(config, weights)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples to a batch (images stacked)."""
        return torch.utils.data.default_collate(samples)

    @abstractmethod
    def criterion(self, params: Params, categories: Categories, train: pd.DataFrame) -> Criterion:
        """The training loss for these params; ``train``: the split rows of the samples whose labels it trains on."""

    @abstractmethod
    def validation_evaluator(self, categories: Categories, criterion: Criterion, config: dict[str, Any]) -> Evaluator:
        """The evaluator of the validation pass after every epoch (``config``: the model's)."""

    @abstractmethod
    def forward_eval(self, model: nn.Module, images: torch.Tensor) -> Any:
        """Raw model outputs for a normalised NCHW batch in eval mode (what evaluators process)."""


class Task(Learner, Exportable, Renderer):
    """One segmentation task. Subclasses are stateless apart from what their constructor is given."""

    @abstractmethod
    def test_evaluator(self, trained: TrainedModel, params: Params, predictions: Path) -> TestEvaluator:
        """The evaluate stage's evaluator; it writes the test predictions into the folder ``predictions``."""

    def forward_test(self, trained: TrainedModel, images: torch.Tensor, params: Params) -> Any:
        """Raw outputs for one normalised test image at its original size (what the test evaluator processes)."""
        return self.forward_eval(trained.model, images)


class Criterion(nn.Module):
    """A training loss: ``forward(model, images, batch)`` runs the model and returns named loss terms; the loop
    minimises their sum and logs each term (``train_<name>``) when there are several."""

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
