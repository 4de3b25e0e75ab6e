"""COCO mask and box AP with pycocotools' ``COCOeval`` (the reference), from in-memory masks and detections.

Ground truth and detections are kept per image as run-length encodings (compact enough to gather across
processes); :func:`coco_metrics` numbers the images, builds the two COCO objects and runs the evaluation.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar_1", "ar_10", "ar_100", "ar_small", "ar_medium", "ar_large")
REPORTED = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar_100")


def encode(mask: np.ndarray) -> dict:
    """RLE of a boolean HxW mask, with its counts as text (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@dataclass
class ImageRecord:
    """One image: its size, ground-truth objects and detections (masks as RLE)."""

    height: int
    width: int
    truths: list[dict] = field(default_factory=list)  # {rle, category, iscrowd}
    detections: list[dict] = field(default_factory=list)  # {rle, box (x1, y1, x2, y2), category, score}


def record(height: int, width: int, gt_masks: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray,
           masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> ImageRecord:
    """An :class:`ImageRecord` from NxHxW boolean masks and their labels (and boxes and scores for detections)."""
    truths = [{"rle": encode(m), "category": int(c), "iscrowd": int(k)}
              for m, c, k in zip(gt_masks, gt_labels, gt_crowd, strict=True)]
    detections = [{"rle": encode(m), "box": [float(v) for v in b], "category": int(c), "score": float(s)}
                  for m, b, c, s in zip(masks, boxes, labels, scores, strict=True)]
    return ImageRecord(height, width, truths, detections)


def _datasets(records: list[ImageRecord], class_ids: list[int], use_boxes: bool) -> tuple[COCO, COCO]:
    images = [{"id": i + 1, "height": r.height, "width": r.width} for i, r in enumerate(records)]
    categories = [{"id": c, "name": str(c)} for c in class_ids]
    annotations, results = [], []
    for image_id, rec in enumerate(records, 1):
        for truth in rec.truths:
            rle = {"size": truth["rle"]["size"], "counts": truth["rle"]["counts"].encode("ascii")}
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": truth["category"],
                "segmentation": truth["rle"], "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": truth["iscrowd"]})
        for det in rec.detections:
            x1, y1, x2, y2 = det["box"]
            box = [x1, y1, x2 - x1, y2 - y1]
            rle = {"size": det["rle"]["size"], "counts": det["rle"]["counts"].encode("ascii")}
            area = box[2] * box[3] if use_boxes else float(mask_utils.area(rle))
            results.append({
                "id": len(results) + 1, "image_id": image_id, "category_id": det["category"],
                "segmentation": det["rle"], "bbox": box, "area": area, "score": det["score"], "iscrowd": 0})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress notes
        truth_set, result_set = COCO(), COCO()
        truth_set.dataset = {"images": images, "categories": categories, "annotations": annotations}
        result_set.dataset = {"images": images, "categories": categories, "annotations": results}
        truth_set.createIndex()
        result_set.createIndex()
    return truth_set, result_set


@dataclass
class CocoResult:
    """Summary statistics, per-class AP and the precision array of one ``COCOeval`` run."""

    stats: dict[str, float]
    per_class_ap: np.ndarray  # AP@[.5:.95] per class (nan where the class has no ground truth)
    per_class_ap50: np.ndarray
    precision: np.ndarray  # [iou thresholds, recall thresholds, classes] at area 'all', the largest maxDets
    recall_thresholds: np.ndarray


def evaluate_records(records: list[ImageRecord], class_ids: list[int], iou_type: str,
                     max_detections: int = 100) -> CocoResult:
    """Run ``COCOeval`` (``iou_type`` 'segm' or 'bbox') over ``records``; maxDets is [1, 10, max(100, given)]."""
    truth_set, result_set = _datasets(records, class_ids, iou_type == "bbox")
    evaluator = COCOeval(truth_set, result_set, iou_type)
    evaluator.params.maxDets = [1, 10, max(100, max_detections)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # T x R x K
    per_ap = np.array([_mean_valid(precision[:, :, k]) for k in range(precision.shape[2])])
    per_ap50 = np.array([_mean_valid(precision[0, :, k]) for k in range(precision.shape[2])])
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    return CocoResult(stats, per_ap, per_ap50, precision, np.asarray(evaluator.params.recThrs))


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def coco_metrics(records: list[ImageRecord], class_ids: list[int], names: list[str],
                 max_detections: int = 100) -> tuple[dict[str, float], pd.DataFrame, CocoResult]:
    """Mask and box AP (``mask_ap``, ``box_ap50``, ...), the per-class table and the mask evaluation."""
    masks = evaluate_records(records, class_ids, "segm", max_detections)
    boxes = evaluate_records(records, class_ids, "bbox", max_detections)
    metrics = {f"mask_{k}": masks.stats[k] for k in REPORTED} | {f"box_{k}": boxes.stats[k] for k in REPORTED}
    truth_counts = {c: 0 for c in class_ids}
    detection_counts = dict(truth_counts)
    for rec in records:  # objects of other classes (not evaluated) are not counted either
        for truth in rec.truths:
            if truth["category"] in truth_counts:
                truth_counts[truth["category"]] += not truth["iscrowd"]
        for det in rec.detections:
            if det["category"] in detection_counts:
                detection_counts[det["category"]] += 1
    per_class = pd.DataFrame({
        "class": names, "mask_ap": masks.per_class_ap, "mask_ap50": masks.per_class_ap50,
        "box_ap": boxes.per_class_ap, "box_ap50": boxes.per_class_ap50,
        "instances": [truth_counts[c] for c in class_ids], "detections": [detection_counts[c] for c in class_ids],
    })
    return metrics, per_class, masks
