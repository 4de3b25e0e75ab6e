"""Panoptic segmentation: Panoptic-DeepLab or Panoptic FPN; PQ / SQ / RQ by the official COCO panoptic rules.

The two models differ in their outputs, loss and post-processing (a ``Family`` each, in
:mod:`segpipe.tasks.panoptic_models`); everything else (the
ground truth as segments, the evaluator, evaluation files, export parity, predict) is shared. A panoptic map's
segments get ids from their content: a stuff class ``c`` is segment ``c + 1``, instance ``k`` is ``C + k``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from segpipe.coco_panoptic import document, id_to_rgb, segments_info
from segpipe.data.canonical import Categories
from segpipe.distributed import reduce_sum
from segpipe.evaluation import Evaluator, Figure, TestEvaluator
from segpipe.fsutil import write_json
from segpipe.metrics import ConfusionMatrix
from segpipe.onnx_export import ExportCheck, Run
from segpipe.panoptic_postprocess import PanopticMap
from segpipe.panoptic_quality import PanopticCategory, PQResult, PQStat, Segment, image_stat, pq_result
from segpipe.params import Params
from segpipe.rendering import Rendered, encode_png
from segpipe.tasks.base import Criterion, Task
from segpipe.tasks.objects import collate_instances, require_things
from segpipe.tasks.panoptic_models import (
    BY_POSTPROCESS,
    DeepLabFamily,
    RawOutputs,
    family_for,
    family_of,
    postprocess_settings,
)
from segpipe.viz import panoptic_grid, panoptic_overlay

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel

MAX_PQ_GAP = 0.001  # the ONNX model's PQ on the parity images may differ from PyTorch's by at most this


def truth_map(semantic: torch.Tensor, target: dict[str, torch.Tensor], is_thing: torch.Tensor,
              ignore_index: int) -> tuple[PanopticMap, set[int]]:
    """The ground truth as a panoptic map, and its crowd instances: ignore pixels, and pixels of an object class
    that belong to no instance, are VOID."""
    category = semantic.long().clone()
    category[semantic == ignore_index] = -1
    instance = torch.zeros_like(category)
    for number, (mask, label) in enumerate(zip(target["masks"].bool(), target["labels"], strict=True), 1):
        instance[mask], category[mask] = number, label
    thing = (category >= 0) & is_thing[category.clamp(min=0)]
    category[thing & (instance == 0)] = -1
    crowd = {number for number, flag in enumerate(target["iscrowd"].tolist(), 1) if flag}
    return PanopticMap(category, instance), crowd


def segments(panoptic: PanopticMap, num_classes: int, crowd: set[int] | frozenset = frozenset()
             ) -> tuple[np.ndarray, list[Segment]]:
    """The segment-id map (stuff class c -> c + 1, instance k -> C + k, VOID 0) and its segments with areas."""
    category, instance = panoptic.category.numpy(), panoptic.instance.numpy()
    ids = np.where(instance > 0, num_classes + instance, category + 1).astype(np.int64)
    present, first, areas = np.unique(ids.ravel(), return_index=True, return_counts=True)
    found = [Segment(int(i), int(category.ravel()[f]), int(i) - num_classes in crowd if i > num_classes else False,
                     int(a)) for i, f, a in zip(present, first, areas, strict=True) if i]
    return ids, found


def panoptic_categories(categories: Categories) -> list[PanopticCategory]:
    return [PanopticCategory(c.id, c.isthing, c.name) for c in categories.items]


def coco_categories(categories: Categories) -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)} for c in categories.items]


class PanopticEvaluator(Evaluator):
    """PQ / SQ / RQ (official rules) and the semantic mIoU of the panoptic maps (VOID counts as a miss)."""

    def __init__(self, categories: Categories, config: dict[str, Any]) -> None:
        self.categories, self.family = categories, family_for(config["name"])
        self.settings = postprocess_settings(config)
        self.is_thing = torch.tensor([c.isthing for c in categories.items])
        self.stat = PQStat(categories.ids)
        self.matrix = ConfusionMatrix(categories.num_classes + 1, categories.ignore_index)
        self.result: PQResult | None = None

    def process(self, batch: dict[str, Any], outputs: list[RawOutputs]) -> None:
        for semantic, target, raw in zip(batch["semantic"], batch["targets"], outputs, strict=True):
            self.add(semantic, target, self.predict(raw))

    def predict(self, raw: RawOutputs) -> PanopticMap:
        """The panoptic map of one image's model outputs."""
        return self.family.postprocess([output.float().cpu() for output in raw], self.is_thing, self.settings)

    def add(self, semantic: torch.Tensor, target: dict[str, torch.Tensor], predicted: PanopticMap
            ) -> tuple[PanopticMap, tuple, tuple]:
        """Score one image; returns the ground truth map and both (id map, segments)."""
        truth, crowd = truth_map(semantic, target, self.is_thing, self.categories.ignore_index)
        num_classes = self.categories.num_classes
        gt, pred = segments(truth, num_classes, crowd), segments(predicted, num_classes)
        image_stat(*gt, *pred, self.stat)
        self.matrix.update(torch.where(predicted.category >= 0, predicted.category, num_classes), semantic)
        return truth, gt, pred

    def reduce(self) -> None:
        self.matrix.reduce()
        summed = reduce_sum(torch.from_numpy(self.stat.as_array()))
        self.stat = PQStat.from_array(self.stat.category_ids, summed.numpy())

    def compute(self) -> dict[str, float]:
        self.result = pq_result(self.stat, panoptic_categories(self.categories))
        per = self.matrix.per_class()
        num_classes = self.categories.num_classes
        present = per["present"][:num_classes]
        miou = float(per["iou"][:num_classes][present].mean()) if present.any() else 0.0
        return {**self.result.metrics(), "miou": miou}

    def per_class(self) -> pd.DataFrame:
        per, result = self.matrix.per_class(), self.result
        rows = [{"class": c.name, "isthing": c.isthing, **{k: result.per_class[c.id][k] for k in
                                                           ("pq", "sq", "rq", "tp", "fp", "fn")},
                 "iou": float(per["iou"][c.id])} for c in self.categories.items]
        return pd.DataFrame(rows)


class PanopticTestEvaluator(PanopticEvaluator, TestEvaluator):
    """PQ over the test images; the ground truth and the predictions in COCO panoptic format (so other tools can
    score them); a grid of the first images as the figure."""

    summary_keys = ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou")

    def __init__(self, categories: Categories, config: dict[str, Any], overlays: int, predictions: Path) -> None:
        super().__init__(categories, config)
        self.overlays = overlays
        self.sets = {part: CocoPanopticSet(predictions, part, categories) for part in ("gt", "pred")}
        self.shown: list[tuple[torch.Tensor, tuple, tuple]] = []

    def process(self, batch: dict[str, Any], outputs: list[RawOutputs]) -> None:
        for sample_id, image, semantic, target, raw in zip(batch["sample_id"], batch["image"], batch["semantic"],
                                                           batch["targets"], outputs, strict=True):
            predicted = self.predict(raw)
            truth, gt, pred = self.add(semantic, target, predicted)
            self.sets["gt"].add(sample_id, *gt)
            self.sets["pred"].add(sample_id, *pred)
            if len(self.shown) < self.overlays:
                self.shown.append((image, (truth.category, truth.instance), (predicted.category, predicted.instance)))

    def close(self) -> None:
        for coco_set in self.sets.values():
            coco_set.close()

    def figures(self) -> dict[str, Figure]:
        categories, shown = self.categories, self.shown
        return {"predictions.png": lambda path: panoptic_grid(shown, categories, path)} if shown else {}


class PanopticTask(Task):
    name = "panoptic"
    objective = "pq"
    objective_label = "val PQ"
    map_name = "panoptic PNGs"
    output_names = DeepLabFamily.output_names  # Panoptic FPN's: see onnx_names
    with_instances = True
    parity_blank_image = True

    def model_config(self, params: Params, categories: Categories) -> dict[str, Any]:
        return {"task": self.name, "name": params.model.name, "num_classes": categories.num_classes,
                "class_ids": [c.id for c in categories.items if c.isthing],
                "unet": params.model.unet.model_dump(), "mask_rcnn": params.model.mask_rcnn.model_dump(mode="json"),
                "panoptic": params.model.panoptic.model_dump()}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_instances(samples)

    def criterion(self, params: Params, categories: Categories, train: pd.DataFrame) -> Criterion:
        require_things(self.name, categories)
        family = family_for(params.model.name)
        return family.criterion(params.model.panoptic.model_dump(), categories.ignore_index)

    def validation_evaluator(self, categories: Categories, criterion: Criterion, config: dict[str, Any]) -> Evaluator:
        return PanopticEvaluator(categories, config)

    def forward_eval(self, model: nn.Module, images: torch.Tensor) -> list[RawOutputs]:
        return family_of(model).raw_outputs(model, images)

    def test_evaluator(self, trained: TrainedModel, params: Params, predictions: Path) -> TestEvaluator:
        return PanopticTestEvaluator(trained.categories, trained.saved["config"], params.evaluate.overlays,
                                     predictions)

    def dynamic_axes(self, config: dict[str, Any]) -> dict[str, dict[int, str]]:
        return family_for(config["name"]).dynamic_axes()

    def trace_input(self, config: dict[str, Any], inputs: list[torch.Tensor], torch_runs: list[Run]) -> torch.Tensor:
        return family_for(config["name"]).trace_input(inputs, torch_runs)

    def compare(self, trained: TrainedModel, samples: list[dict[str, Any]], torch_runs: list[Run],
                onnx_runs: list[Run], params: Params) -> ExportCheck:
        """Run the shared post-processing on both runs (the test images and a blank one), and compare the panoptic
        maps pixel by pixel and their PQ."""
        config = trained.saved["config"]
        truths = [collate_instances([sample]) for sample in samples]  # one by one: test images may differ in size
        scores = {}
        for engine, runs in (("torch", torch_runs), ("onnx", onnx_runs)):
            evaluator = PanopticEvaluator(trained.categories, config)
            maps = [evaluator.predict([torch.from_numpy(output) for output in run]) for run in runs]
            for truth, predicted in zip(truths, maps, strict=False):
                evaluator.add(truth["semantic"][0], truth["targets"][0], predicted)
            scores[engine] = (evaluator.compute()["pq"], maps)
        agree = total = 0
        for expected, got in zip(scores["torch"][1], scores["onnx"][1], strict=True):
            agree += int(((expected.category == got.category) & (expected.instance == got.instance)).sum())
            total += expected.category.numel()
        agreement, torch_pq, onnx_pq = agree / total, scores["torch"][0], scores["onnx"][0]
        report = {"parity_images": len(torch_runs), "panoptic_pixel_agreement": agreement,
                  "parity_pq_torch": torch_pq, "parity_pq_onnx": onnx_pq}
        failure = ""
        if agreement < params.export.min_agreement:
            failure = (f"the ONNX model's panoptic maps agree with PyTorch's on {agreement:.5f} of the pixels, below "
                       f"export.min_agreement {params.export.min_agreement}")
        elif abs(torch_pq - onnx_pq) > MAX_PQ_GAP:
            failure = f"the ONNX model's PQ is {onnx_pq:.4f}, PyTorch's {torch_pq:.4f}: more than {MAX_PQ_GAP} apart"
        summary = f"panoptic pixel agreement {agreement:.5f}, PQ {onnx_pq:.4f} vs PyTorch {torch_pq:.4f}"
        return ExportCheck(report, failure, summary)

    def onnx_names(self, config: dict[str, Any]) -> tuple[str, ...]:
        return family_for(config["name"]).output_names

    def onnx_module(self, model: nn.Module) -> nn.Module:
        return family_of(model).onnx_module(model)

    def output_contract(self, config: dict[str, Any]) -> dict[str, Any]:
        family = family_for(config["name"])
        meaning = {"semantic": "float32 [1, C, H, W]: class logits", "center": "float32 [1, 1, H, W]: centre heatmap",
                   "offset": "float32 [1, 2, H, W]: (dy, dx) from each pixel to its instance centre",
                   "boxes": "float32 [N, 4]: x1, y1, x2, y2", "labels": "int64 [N]: class ids",
                   "scores": "float32 [N]", "masks": "float32 [N, 1, H, W]: mask probabilities"}
        return {"names": list(family.output_names), "batch": 1,
                **{name: meaning[name] for name in family.output_names},
                "postprocess": family.postprocess_name,
                "settings": postprocess_settings(config),
                "meaning": "apply segpipe.panoptic_postprocess (the named recipe with these settings) to get a "
                           "panoptic map; segment ids: stuff class c -> c + 1, instance k -> C + k, 0 = VOID"}

    def render(self, outputs: list[torch.Tensor], pixels: np.ndarray, categories: Categories,
               output: dict[str, Any]) -> Rendered:
        """The COCO panoptic PNG (RGB-encoded segment ids), an overlay, and the image's segments_info."""
        is_thing = torch.tensor([c.isthing for c in categories.items])
        family = BY_POSTPROCESS[output["postprocess"]]
        predicted = family.postprocess([t.float() for t in outputs], is_thing, output["settings"])
        ids, found = segments(predicted, categories.num_classes)
        picture = panoptic_overlay(torch.from_numpy(pixels).permute(2, 0, 1), predicted.category, predicted.instance,
                                   categories)
        return Rendered(id_to_rgb(ids), picture.permute(1, 2, 0).numpy(),
                        [{"segments_info": segments_info(ids, found)}])

    def response(self, rendered: Rendered, categories: Categories) -> dict[str, Any]:
        """The image's segments_info and its COCO panoptic PNG (base64), the pair ``predict`` writes."""
        return {**rendered.results[0], "panoptic_png_base64": base64.b64encode(encode_png(rendered.label_map)).decode()}

    def prediction_file(self, entries: list[dict[str, Any]], categories: Categories) -> Any:
        images = [{"id": i, "file_name": e["file_name"]} for i, e in enumerate(entries, 1)]
        annotations = [{"image_id": i, "file_name": e["prediction"],
                        "segments_info": e["segments_info"]} for i, e in enumerate(entries, 1)]
        return document(annotations, images, coco_categories(categories))


class CocoPanopticSet:
    """``<folder>/<part>.json`` and the PNGs in ``<folder>/<part>/``: a COCO panoptic set, each PNG written as soon
    as it is added (only the small segment lists stay in memory until :meth:`close`)."""

    def __init__(self, folder: Path, part: str, categories: Categories) -> None:
        self.folder, self.part, self.categories = folder, part, categories
        (folder / part).mkdir()
        self.annotations: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def add(self, sample_id: str, ids: np.ndarray, found: list[Segment]) -> None:
        image_id = len(self.images) + 1
        Image.fromarray(id_to_rgb(ids)).save(self.folder / self.part / f"{sample_id}.png")
        self.images.append({"id": image_id, "file_name": f"{sample_id}.png", "height": ids.shape[0],
                            "width": ids.shape[1]})
        self.annotations.append({"image_id": image_id, "file_name": f"{sample_id}.png",
                                 "segments_info": segments_info(ids, found)})

    def close(self) -> None:
        write_json(self.folder / f"{self.part}.json",
                   document(self.annotations, self.images, coco_categories(self.categories)))
