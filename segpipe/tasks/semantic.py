"""Semantic segmentation: a class per pixel; NCHW logits; mIoU and friends from one confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from segpipe.data.canonical import Categories
from segpipe.data.imageio import save_label
from segpipe.distributed import reduce_sum
from segpipe.evaluation import Evaluator, Figure, TestEvaluator
from segpipe.inference import infer
from segpipe.losses import build_loss, median_frequency_weights
from segpipe.metrics import BoundaryF1, ConfusionMatrix
from segpipe.onnx_export import INPUT, SPATIAL_AXES, ExportCheck, Run, logit_parity
from segpipe.params import EvaluateParams, Params
from segpipe.rendering import Rendered
from segpipe.tasks.base import Criterion, Task
from segpipe.viz import confusion_matrix_plot, overlay, prediction_grid

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel

OUTPUT = "logits"


class PixelCriterion(Criterion):
    """A per-pixel loss on the logits against the semantic map."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        target = batch["semantic"].to(images.device, non_blocking=True).long()
        return {"loss": self.loss(model(images), target)}


class SemanticValidation(Evaluator):
    """Validation loss and the confusion-matrix metrics that the training history reports."""

    def __init__(self, categories: Categories, loss: nn.Module) -> None:
        self.loss = loss
        self.matrix = ConfusionMatrix(categories.num_classes, categories.ignore_index)
        self.sums = torch.zeros(2, dtype=torch.float64)  # loss * images, images

    def process(self, batch: dict[str, Any], outputs: torch.Tensor) -> None:
        target = batch["semantic"].to(outputs.device, non_blocking=True).long()
        self.sums += torch.tensor([self.loss(outputs.float(), target).item() * len(outputs), len(outputs)],
                                  dtype=torch.float64)
        self.matrix.update(outputs.argmax(1), target)

    def reduce(self) -> None:
        self.matrix.reduce()
        self.sums = reduce_sum(self.sums)

    def compute(self) -> dict[str, float]:
        metrics = self.matrix.compute()
        return {"loss": float(self.sums[0] / max(self.sums[1], 1)), "miou": metrics["miou"],
                "pixel_accuracy": metrics["pixel_accuracy"], "mean_accuracy": metrics["mean_accuracy"]}


class SemanticTestEvaluator(TestEvaluator):
    """The test metrics of the confusion matrix and boundary F1; a label-map PNG per image; the confusion matrix
    and a grid of the first images as figures."""

    summary_keys = ("miou", "pixel_accuracy", "mean_accuracy", "fwiou", "mean_dice", "boundary_f1")

    def __init__(self, categories: Categories, settings: EvaluateParams, predictions: Path) -> None:
        self.categories, self.predictions, self.overlays = categories, predictions, settings.overlays
        self.summary_label = f" ({settings.mode})"
        self.matrix = ConfusionMatrix(categories.num_classes, categories.ignore_index)
        self.boundary = BoundaryF1(categories.num_classes, categories.ignore_index, settings.boundary_tolerance)
        self.shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def process(self, batch: dict[str, Any], outputs: torch.Tensor) -> None:
        prediction, target = outputs.argmax(1).cpu(), batch["semantic"].long()
        self.matrix.update(prediction, target)
        self.boundary.update(prediction, target)
        for index, sample_id in enumerate(batch["sample_id"]):
            save_label(prediction[index].numpy(), self.predictions / f"{sample_id}.png")  # its predicted class ids
            if len(self.shown) < self.overlays:
                self.shown.append((batch["image"][index], target[index], prediction[index]))

    def reduce(self) -> None:
        self.matrix.reduce()
        self.boundary.reduce()

    def compute(self) -> dict[str, float]:
        return {**self.matrix.compute(), "boundary_f1": self.boundary.compute()}

    def per_class(self) -> pd.DataFrame:
        per = self.matrix.per_class()
        return pd.DataFrame({
            "class": self.categories.names, "iou": per["iou"].numpy(), "accuracy": per["accuracy"].numpy(),
            "dice": per["dice"].numpy(), "support_pixels": per["support"].numpy().astype("int64"),
            "present": per["present"].numpy(),
        })

    def figures(self) -> dict[str, Figure]:
        categories, matrix, shown = self.categories, self.matrix.matrix, self.shown
        figures = {"confusion_matrix.png": lambda path: confusion_matrix_plot(matrix, categories.names, path)}
        if shown:
            figures["predictions.png"] = lambda path: prediction_grid(shown, categories, path)
        return figures


class SemanticTask(Task):
    name = "semantic"
    objective = "miou"
    objective_label = "val mIoU"
    map_name = "label maps"
    output_names = (OUTPUT,)

    def model_config(self, params: Params, categories: Categories) -> dict[str, Any]:
        return {"task": self.name, "name": params.model.name, "num_classes": categories.num_classes,
                "unet": params.model.unet.model_dump()}

    def criterion(self, params: Params, categories: Categories, train: pd.DataFrame) -> Criterion:
        weights = None
        if params.train.loss.class_weights == "median_frequency":
            weights = median_frequency_weights(train.class_pixels.tolist(), (train.width * train.height).to_numpy())
        return PixelCriterion(build_loss(params.train.loss, categories.num_classes, categories.ignore_index, weights))

    def validation_evaluator(self, categories: Categories, criterion: Criterion, config: dict[str, Any]) -> Evaluator:
        return SemanticValidation(categories, criterion.loss)

    def forward_eval(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images)

    def test_evaluator(self, trained: TrainedModel, params: Params, predictions: Path) -> TestEvaluator:
        return SemanticTestEvaluator(trained.categories, params.evaluate, predictions)

    def forward_test(self, trained: TrainedModel, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Logits of the whole image, or of sliding windows over it (``evaluate.mode``)."""
        settings = params.evaluate
        return infer(trained.model, images, settings.mode, trained.categories.num_classes, settings.window,
                     settings.stride)

    def dynamic_axes(self, config: dict[str, Any]) -> dict[str, dict[int, str]]:
        return {INPUT: SPATIAL_AXES, OUTPUT: SPATIAL_AXES}

    def compare(self, trained: TrainedModel, samples: list[dict[str, Any]], torch_runs: list[Run],
                onnx_runs: list[Run], params: Params) -> ExportCheck:
        result = logit_parity([run[0] for run in torch_runs], [run[0] for run in onnx_runs])
        report = {"parity_images": result.images, "max_abs_logit_diff": result.max_abs_logit_diff,
                  "argmax_agreement": result.argmax_agreement}
        if result.argmax_agreement < params.export.min_agreement:
            return ExportCheck(report, f"ONNX argmax agreement {result.argmax_agreement:.5f} is below "
                                       f"export.min_agreement {params.export.min_agreement} "
                                       f"(max logit diff {result.max_abs_logit_diff:.2e})")
        return ExportCheck(report, summary=f"argmax agreement {result.argmax_agreement:.5f}, max logit diff "
                                           f"{result.max_abs_logit_diff:.1e}")

    def render(self, outputs: list[torch.Tensor], pixels: np.ndarray, categories: Categories,
               output: dict[str, Any]) -> Rendered:
        labels = outputs[0].float().argmax(1)[0]
        picture = overlay(torch.from_numpy(pixels).permute(2, 0, 1), labels, categories)
        dtype = np.uint8 if categories.num_classes <= 256 else np.uint16
        return Rendered(labels.numpy().astype(dtype), picture.permute(1, 2, 0).numpy())

    def response(self, rendered: Rendered, categories: Categories) -> dict[str, Any]:
        """The image's size and, for each class present, its pixel count and share of the image."""
        height, width = rendered.label_map.shape
        ids, counts = np.unique(rendered.label_map, return_counts=True)
        return {"height": height, "width": width,
                "classes": [{"id": categories.items[int(i)].id, "name": categories.items[int(i)].name,
                             "pixels": int(n), "share": round(int(n) / (height * width), 6)}
                            for i, n in zip(ids, counts, strict=True)]}

    def output_contract(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"name": OUTPUT, "dtype": "float32", "layout": "NCHW",
                "meaning": "per-class logits at the input resolution; argmax over channel C gives the class id"}
