"""Semantic segmentation: a class per pixel; NCHW logits; mIoU and friends from one confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

from segpipe.config import Params
from segpipe.data.canonical import Categories
from segpipe.data.dataset import DecodingSegmentation, data_loader
from segpipe.data.imageio import save_label
from segpipe.distributed import reduce_sum
from segpipe.inference import infer
from segpipe.losses import build_loss, median_frequency_weights
from segpipe.metrics import BoundaryF1, ConfusionMatrix
from segpipe.onnx_export import INPUT, SPATIAL_AXES, export_onnx, latency, parity
from segpipe.progress import track
from segpipe.tasks.base import Criterion, Evaluation, Evaluator, ExportCheck, Rendered, Task
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

    @torch.no_grad()
    def evaluate(self, trained: TrainedModel, manifest: pd.DataFrame, params: Params, device: torch.device,
                 workers: int, predictions: Path) -> Evaluation:
        settings, categories = params.evaluate, trained.categories
        matrix = ConfusionMatrix(categories.num_classes, categories.ignore_index)
        boundary = BoundaryF1(categories.num_classes, categories.ignore_index, settings.boundary_tolerance)
        to_input = trained.input_transform()
        loader = data_loader(DecodingSegmentation(manifest), workers, batch_size=1)
        samples = []
        for sample_id, batch in zip(manifest.sample_id, track(loader, len(manifest), "evaluate"), strict=True):
            images = to_input(batch["image"].to(device))
            logits = infer(trained.model, images, settings.mode, categories.num_classes, settings.window,
                           settings.stride)
            prediction, target = logits.argmax(1).cpu(), batch["semantic"].long()
            matrix.update(prediction, target)
            boundary.update(prediction, target)
            save_label(prediction[0].numpy(), predictions / f"{sample_id}.png")  # its predicted class ids
            if len(samples) < settings.overlays:
                samples.append((batch["image"][0], target[0], prediction[0]))
        metrics = {**matrix.compute(), "boundary_f1": boundary.compute(), "images": len(manifest)}
        per = matrix.per_class()
        per_class = pd.DataFrame({
            "class": categories.names, "iou": per["iou"].numpy(), "accuracy": per["accuracy"].numpy(),
            "dice": per["dice"].numpy(), "support_pixels": per["support"].numpy().astype("int64"),
            "present": per["present"].numpy(),
        })
        figures = {"confusion_matrix.png": lambda path: confusion_matrix_plot(matrix.matrix, categories.names, path)}
        if samples:
            figures["predictions.png"] = lambda path: prediction_grid(samples, categories, path)
        keys = ("miou", "pixel_accuracy", "mean_accuracy", "fwiou", "mean_dice", "boundary_f1")
        summary = ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)
        return Evaluation(metrics, per_class, figures, f" ({settings.mode}): {summary}")

    def export(self, trained: TrainedModel, samples: list[dict[str, Any]], inputs: list[torch.Tensor], path: Path,
               params: Params) -> ExportCheck:
        export_onnx(trained.model, path, inputs[0], params.export.opset, self.output_names,
                    {INPUT: SPATIAL_AXES, OUTPUT: SPATIAL_AXES})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        result = parity(trained.model, lambda x: session.run(None, {INPUT: x})[0], inputs)
        report: dict[str, Any] = {"parity_images": result.images, "max_abs_logit_diff": result.max_abs_logit_diff,
                                  "argmax_agreement": result.argmax_agreement,
                                  "min_agreement": params.export.min_agreement}
        if result.argmax_agreement < params.export.min_agreement:
            return ExportCheck(report, f"ONNX argmax agreement {result.argmax_agreement:.5f} is below "
                                       f"export.min_agreement {params.export.min_agreement} "
                                       f"(max logit diff {result.max_abs_logit_diff:.2e})")
        report.update(latency(trained.model, session, inputs[0], params.export.latency_runs))
        return ExportCheck(report, summary=f"argmax agreement {result.argmax_agreement:.5f}, max logit diff "
                                           f"{result.max_abs_logit_diff:.1e}")

    def render(self, outputs: list[torch.Tensor], pixels: np.ndarray, categories: Categories,
               output: dict[str, Any]) -> Rendered:
        labels = outputs[0].float().argmax(1)[0]
        picture = overlay(torch.from_numpy(pixels).permute(2, 0, 1), labels, categories)
        dtype = np.uint8 if categories.num_classes <= 256 else np.uint16
        return Rendered(labels.numpy().astype(dtype), picture.permute(1, 2, 0).numpy())

    def output_contract(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"name": OUTPUT, "dtype": "float32", "layout": "NCHW",
                "meaning": "per-class logits at the input resolution; argmax over channel C gives the class id"}
