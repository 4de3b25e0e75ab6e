"""The task interface: everything that differs between semantic, instance and panoptic segmentation.

The stages, the train/validate loops, checkpointing, resume, DDP and tracking only talk to a :class:`Task`:

- it describes its model in a config that ``model.pt`` keeps (the catalog's builder rebuilds it anywhere);
- it makes per-sample training targets (the sample transform) and collates samples into batches;
- its criterion returns a dict of named loss terms, which the loop sums;
- its evaluators follow Detectron2's shape (``process`` per batch, ``reduce`` across processes, ``compute``) and
  serve both validation and the evaluate stage;
- it names the objective that picks the best epoch, stops early and ranks sweep trials (``val_<objective>``);
- it owns the test-time evaluation reports, the ONNX export with its parity check, and how ``predict`` renders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from segpipe.config import Params
from segpipe.data.canonical import Categories
from segpipe.models import build_model

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel


class Evaluator(ABC):
    """Accumulates model outputs against the batch's ground truth; every process holds its own share."""

    @abstractmethod
    def process(self, batch: dict[str, Any], outputs: Any) -> None:
        """Add one batch (as the loader gave it) and the model's outputs for it."""

    @abstractmethod
    def reduce(self) -> None:
        """Combine the shares of all processes (a no-op without torch.distributed)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over everything processed (after :meth:`reduce`)."""


Figure = Callable[[Path], None]


@dataclass
class Evaluation:
    """What the evaluate stage writes besides the predictions: metrics (reports/metrics.json), a per-class table
    and figures."""

    metrics: dict[str, float]
    per_class: pd.DataFrame
    figures: dict[str, Figure] = field(default_factory=dict)  # file name -> draws it at the given path
    summary: str = ""


@dataclass
class ExportCheck:
    """The parity of the ONNX model with PyTorch: report fields, and why it failed (empty when it passed)."""

    report: dict[str, Any]
    failure: str = ""
    summary: str = ""


@dataclass
class Rendered:
    """What ``predict`` writes for one image: a label or instance-id map, an overlay, and COCO results (objects)."""

    label_map: np.ndarray  # HxW uint8 class ids, or uint16 instance ids
    overlay: np.ndarray  # HxWx3 uint8
    results: list[dict[str, Any]] | None = None  # COCO results entries (without image ids), None when not objects


class Learner(ABC):
    """What the trainer needs: the model, its batches, loss and validation. A :class:`Task` is a learner that also
    evaluates, exports and predicts; autoencoder pretraining is a learner only."""

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


class Task(Learner):
    """One segmentation task. Subclasses are stateless apart from what their constructor is given."""

    map_name: str  # what predict writes per image, e.g. "label maps"
    output_names: tuple[str, ...]  # the ONNX model's outputs

    # --- evaluate, export, predict ----------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, trained: TrainedModel, manifest: pd.DataFrame, params: Params, device: torch.device,
                 workers: int, predictions: Path) -> Evaluation:
        """Test metrics over ``manifest`` at the images' original size, with the per-class table and figures; the
        test predictions go to the folder ``predictions`` in files other tools read, each as soon as it is made,
        so memory does not grow with the number of test images."""

    @abstractmethod
    def export(self, trained: TrainedModel, samples: list[dict[str, Any]], inputs: list[torch.Tensor], path: Path,
               params: Params) -> ExportCheck:
        """Write ``path`` as ONNX and check it with onnxruntime on ``inputs`` (the normalised images of the test
        ``samples``, whose ground truth a task may score both models on)."""

    @abstractmethod
    def output_contract(self, config: dict[str, Any]) -> dict[str, Any]:
        """The ``output`` part of export/model.json for a model of ``config``."""

    def onnx_names(self, config: dict[str, Any]) -> tuple[str, ...]:
        """The ONNX outputs of a model of ``config`` (the task's ``output_names`` unless its models differ)."""
        return self.output_names

    def prediction_file(self, entries: list[dict[str, Any]], categories: Categories) -> Any:
        """What ``predict`` writes as predictions.json from the ``results`` of its images (each with ``file_name``,
        the input's name, and ``prediction``, the file predict wrote for it)."""
        return entries

    def onnx_module(self, model: nn.Module) -> nn.Module:
        """The module that export traces: one NCHW batch in, the ONNX model's outputs (``output_names``) out."""
        return model

    @torch.no_grad()
    def onnx_outputs(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """What the ONNX model returns for ``images``, computed by PyTorch: one tensor per ``output_names``."""
        outputs = self.onnx_module(model)(images)
        return list(outputs) if isinstance(outputs, tuple) else [outputs]

    @abstractmethod
    def render(self, outputs: list[torch.Tensor], pixels: np.ndarray, categories: Categories,
               output: dict[str, Any]) -> Rendered:
        """``predict``'s files for one image from the ONNX-ordered ``outputs`` (``output``: the contract)."""


class Criterion(nn.Module):
    """A training loss: ``forward(model, images, batch)`` runs the model and returns named loss terms; the loop
    minimises their sum and logs each term (``train_<name>``) when there are several."""

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
