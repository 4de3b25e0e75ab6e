"""Instance segmentation with Mask R-CNN: targets from the instance maps, COCO mask/box AP by pycocotools."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops import box_iou

from segpipe.coco_eval import CocoResult, ImageRecord, coco_metrics, encode, record
from segpipe.data.canonical import Categories
from segpipe.evaluation import Evaluator, Figure, TestEvaluator
from segpipe.fsutil import write_json
from segpipe.models.mask_rcnn import ExportableInstance
from segpipe.onnx_export import INPUT, ExportCheck, Run
from segpipe.params import Params
from segpipe.rendering import Rendered
from segpipe.tasks.base import Criterion, Task
from segpipe.tasks.objects import busiest_input, collate_instances, detection_targets, require_things
from segpipe.viz import instance_grid, instance_overlay, precision_recall_plot

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel

MAX_AP_GAP = 0.005  # the ONNX model's mask AP may differ from PyTorch's by at most half a point
MAP_SCORE = 0.5  # predict paints detections scoring at least this into instance maps and overlays


class DetectionCriterion(Criterion):
    """Mask R-CNN's own loss terms."""

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return model(list(images), detection_targets(batch, images.device))


class CocoEvaluator(Evaluator):
    """Collects ground truth and detections per image as RLE; mask and box AP by ``COCOeval``."""

    def __init__(self, categories: Categories, config: dict[str, Any]) -> None:
        options = config["mask_rcnn"]
        self.categories = categories
        self.mask_threshold, self.max_detections = options["mask_threshold"], options["detections_per_image"]
        self.records: list[ImageRecord] = []
        self.class_table = pd.DataFrame()
        self.mask_result: CocoResult | None = None

    def process(self, batch: dict[str, Any], outputs: list[dict[str, torch.Tensor]]) -> None:
        for target, output in zip(batch["targets"], outputs, strict=True):
            height, width = target["masks"].shape[-2:]
            masks = (output["masks"][:, 0] > self.mask_threshold).cpu().numpy()
            self.records.append(record(
                height, width, target["masks"].bool().numpy(), target["labels"].numpy(), target["iscrowd"].numpy(),
                masks, output["boxes"].float().cpu().numpy(), output["labels"].cpu().numpy(),
                output["scores"].float().cpu().numpy()))

    def reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            gathered: list[list[ImageRecord] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.records)
            self.records = [rec for part in gathered for rec in part or []]

    def compute(self) -> dict[str, float]:
        things = [c for c in self.categories.items if c.isthing]
        metrics, self.class_table, masks = coco_metrics(self.records, [c.id for c in things],
                                                      [c.name for c in things], self.max_detections)
        self.mask_result = masks
        return metrics


class CocoTestEvaluator(CocoEvaluator, TestEvaluator):
    """COCO AP over the test images; every detection in COCO results format (detections.json); the
    precision-recall curves and a grid of the first images as figures."""

    summary_keys = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap", "box_ap50", "mask_ar_100")

    def __init__(self, categories: Categories, config: dict[str, Any], overlays: int, predictions: Path) -> None:
        super().__init__(categories, config)
        self.overlays, self.predictions = overlays, predictions
        self.sample_ids: list[str] = []
        self.shown: list[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    def process(self, batch: dict[str, Any], outputs: list[dict[str, torch.Tensor]]) -> None:
        super().process(batch, outputs)
        self.sample_ids.extend(batch["sample_id"])
        for image, target, output in zip(batch["image"], batch["targets"], outputs, strict=True):
            if len(self.shown) < self.overlays:
                self.shown.append((image, target, {k: v.cpu() for k, v in output.items()}))

    def per_class(self) -> pd.DataFrame:
        return self.class_table

    def close(self) -> None:
        records = list(zip(self.sample_ids, self.records, strict=True))  # COCOeval holds them all anyway
        write_json(self.predictions / "detections.json", coco_results(records))

    def figures(self) -> dict[str, Figure]:
        categories, result, shown, threshold = self.categories, self.mask_result, self.shown, self.mask_threshold
        things = [c.name for c in categories.items if c.isthing]
        figures = {"precision_recall.png": lambda path: precision_recall_plot(result, things, path)}
        if shown:
            figures["predictions.png"] = lambda path: instance_grid(shown, categories, threshold, path)
        return figures


Detections = Run  # boxes, labels, scores, masks of one image, in the ONNX model's output order


def detection_parity(torch_runs: list[Detections], onnx_runs: list[Detections],
                     mask_threshold: float) -> dict[str, Any]:
    """Match onnxruntime's detections to PyTorch's, image by image and in order (same label, box IoU >= 0.9);
    scores and masks of the matched pairs are compared. Counts images where both found nothing."""
    matched = total = empty_images = 0
    score_diff, mask_ious = 0.0, [1.0]
    for expected, got in zip(torch_runs, onnx_runs, strict=True):
        total += max(len(expected[0]), len(got[0]))
        empty_images += len(expected[0]) == len(got[0]) == 0
        if len(expected[0]) and len(got[0]):
            n = min(len(expected[0]), len(got[0]))
            ious = box_iou(torch.from_numpy(expected[0][:n]), torch.from_numpy(got[0][:n])).diagonal().numpy()
            same = (ious >= 0.9) & (expected[1][:n] == got[1][:n])
            matched += int(same.sum())
            score_diff = max(score_diff, float(np.abs(expected[2][:n] - got[2][:n])[same].max(initial=0.0)))
            for a, b in zip(expected[3][:n][same, 0] > mask_threshold, got[3][:n][same, 0] > mask_threshold,
                            strict=True):
                union = np.logical_or(a, b).sum()
                mask_ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    return {"parity_images": len(torch_runs), "torch_detections": total,
            "matched_share": matched / total if total else 1.0, "max_score_diff": score_diff,
            "min_mask_iou": min(mask_ious), "images_without_detections": empty_images}


def mask_ap(categories: Categories, config: dict[str, Any], samples: list[dict[str, Any]],
            runs: list[Detections]) -> float:
    """Mask AP over ``samples`` of the detections ``runs`` (one per sample; extra runs are ignored)."""
    evaluator = CocoEvaluator(categories, config)
    for sample, run in zip(samples, runs, strict=False):
        outputs = {name: torch.as_tensor(value) for name, value in zip(ExportableInstance.OUTPUTS, run, strict=True)}
        evaluator.process(collate_instances([sample]), [outputs])
    return evaluator.compute()["mask_ap"]


def coco_results(records: list[tuple[str, ImageRecord]]) -> list[dict[str, Any]]:
    """Every detection of the test images in COCO results format (RLE mask, xywh box), with its sample id."""
    return [{"sample_id": sample_id, "category_id": d["category"], "segmentation": d["rle"], "score": d["score"],
             "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]]}
            for sample_id, record in records for d in record.detections]


class InstanceTask(Task):
    name = "instance"
    objective = "mask_ap"
    objective_label = "val mask AP"
    map_name = "instance maps"
    output_names = ExportableInstance.OUTPUTS
    with_instances = True
    parity_blank_image = True

    def model_config(self, params: Params, categories: Categories) -> dict[str, Any]:
        return {"task": self.name, "name": params.model.name, "num_classes": categories.num_classes,
                "class_ids": [c.id for c in categories.items if c.isthing],
                "mask_rcnn": params.model.mask_rcnn.model_dump(mode="json")}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_instances(samples)

    def criterion(self, params: Params, categories: Categories, train: pd.DataFrame) -> Criterion:
        require_things(self.name, categories)
        return DetectionCriterion()

    def validation_evaluator(self, categories: Categories, criterion: Criterion, config: dict[str, Any]) -> Evaluator:
        return CocoEvaluator(categories, config)

    def forward_eval(self, model: nn.Module, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return model(list(images))

    def test_evaluator(self, trained: TrainedModel, params: Params, predictions: Path) -> TestEvaluator:
        return CocoTestEvaluator(trained.categories, trained.saved["config"], params.evaluate.overlays, predictions)

    def dynamic_axes(self, config: dict[str, Any]) -> dict[str, dict[int, str]]:
        return {INPUT: {2: "height", 3: "width"}, "masks": {0: "detections", 2: "height", 3: "width"},
                **{name: {0: "detections"} for name in ("boxes", "labels", "scores")}}

    def trace_input(self, config: dict[str, Any], inputs: list[torch.Tensor], torch_runs: list[Run]) -> torch.Tensor:
        """The input with the most detections: a model traced without any can lose its mask branch."""
        return busiest_input(inputs, torch_runs)

    def compare(self, trained: TrainedModel, samples: list[dict[str, Any]], torch_runs: list[Run],
                onnx_runs: list[Run], params: Params) -> ExportCheck:
        """Match the detections of both runs (on the test images and a blank one, which usually has none), and
        compare the mask AP of both on the test samples (within 0.5 points)."""
        config = trained.saved["config"]
        check = detection_parity(torch_runs, onnx_runs, config["mask_rcnn"]["mask_threshold"])
        torch_ap, onnx_ap = (mask_ap(trained.categories, config, samples, runs) for runs in (torch_runs, onnx_runs))
        report: dict[str, Any] = {**check, "parity_mask_ap_torch": torch_ap, "parity_mask_ap_onnx": onnx_ap}
        failure = ""
        if check["matched_share"] < params.export.min_agreement:
            failure = (f"ONNX detections match PyTorch's for {check['matched_share']:.4f} of them, below "
                       f"export.min_agreement {params.export.min_agreement}")
        elif abs(torch_ap - onnx_ap) > MAX_AP_GAP:
            failure = (f"the ONNX model's mask AP on the parity images is {onnx_ap:.4f}, PyTorch's {torch_ap:.4f}: "
                       f"more than {MAX_AP_GAP} apart")
        summary = (f"{check['matched_share']:.4f} of {check['torch_detections']} detections matched (label, box IoU "
                   f">= 0.9), max score diff {check['max_score_diff']:.1e}, min mask IoU {check['min_mask_iou']:.4f}, "
                   f"mask AP {onnx_ap:.4f} vs PyTorch {torch_ap:.4f}")
        return ExportCheck(report, failure, summary)

    def onnx_module(self, model: nn.Module) -> nn.Module:
        return ExportableInstance(model).eval()

    def output_contract(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "names": list(self.output_names), "batch": 1,
            "boxes": "float32 [N, 4]: x1, y1, x2, y2 in input pixels", "labels": "int64 [N]: class ids (classes)",
            "scores": "float32 [N], sorted high to low",
            "masks": "float32 [N, 1, H, W]: mask probability at the input size; > mask_threshold is the object",
            "mask_threshold": config["mask_rcnn"]["mask_threshold"],
            "map_score_threshold": MAP_SCORE,
        }

    def render(self, outputs: list[torch.Tensor], pixels: np.ndarray, categories: Categories,
               output: dict[str, Any]) -> Rendered:
        """A 16-bit instance map (ids by score, best on top) and overlay of the detections scoring at least
        ``map_score_threshold``; every detection as a COCO result (RLE mask, xywh box, class id, score)."""
        boxes, labels, scores, masks = (t.detach().cpu() for t in outputs)
        binary = masks[:, 0] > output["mask_threshold"]
        instance_map = np.zeros(binary.shape[-2:], np.uint16)
        shown = (scores >= output["map_score_threshold"]).nonzero().flatten().tolist()
        for rank in reversed(shown):  # lowest score first, so the best detection ends on top
            instance_map[binary[rank].numpy()] = rank + 1
        image = torch.from_numpy(pixels).permute(2, 0, 1)
        visible = [i for i in shown if (instance_map == i + 1).any()]
        captions = [f"{categories.items[int(labels[i])].name} {scores[i]:.2f}" for i in visible]
        masks_shown = torch.from_numpy(np.stack([instance_map == i + 1 for i in visible])) if visible else binary[:0]
        picture = instance_overlay(image, masks_shown, labels[visible], categories, captions)
        results = [{"category_id": int(labels[i]), "segmentation": encode(binary[i].numpy()),
                    "bbox": [float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2] - boxes[i, 0]),
                             float(boxes[i, 3] - boxes[i, 1])], "score": float(scores[i]),
                    "instance_id": i + 1 if i in visible else 0} for i in range(len(scores))]
        return Rendered(instance_map, picture.permute(1, 2, 0).numpy(), results)
