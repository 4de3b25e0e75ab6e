"""segpipe's COCO AP equals pycocotools' COCOeval run the documented way (loadRes on a results list)."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segpipe.coco_eval import STAT_NAMES, coco_metrics, evaluate_records, record


def disc(height, width, cy, cx, r):
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def box(height, width, y0, x0, y1, x1):
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def hand_built():
    """Four images, classes 3 and 4 (class 5 is never predicted, class 6 never occurs): true and false positives,
    a duplicate, a crowd region with a detection on it, an image without objects and one without detections."""
    h, w = 64, 80
    images = []
    # 1: two objects, one found well, one poorly; a false positive of class 4
    truth = [(disc(h, w, 20, 20, 10), 3, 0), (box(h, w, 35, 40, 60, 75), 4, 0)]
    dets = [(disc(h, w, 21, 20, 10), 3, 0.9), (box(h, w, 40, 45, 60, 70), 4, 0.6), (disc(h, w, 50, 10, 6), 4, 0.7)]
    images.append((truth, dets))
    # 2: a crowd region of class 3 with a detection on it (ignored), a duplicate detection, class 5 missed
    truth = [(box(h, w, 0, 0, 30, 40), 3, 1), (disc(h, w, 45, 60, 12), 3, 0), (box(h, w, 40, 5, 60, 25), 5, 0)]
    dets = [(box(h, w, 2, 2, 28, 38), 3, 0.8), (disc(h, w, 45, 60, 12), 3, 0.95), (disc(h, w, 46, 61, 11), 3, 0.5)]
    images.append((truth, dets))
    # 3: no objects, one false detection
    images.append(([], [(disc(h, w, 30, 30, 8), 4, 0.4)]))
    # 4: objects, no detections at all
    images.append(([(disc(h, w, 32, 40, 5), 4, 0)], []))
    return h, w, images


def to_records(h, w, images):
    records = []
    for truth, dets in images:
        gt_masks = np.array([m for m, _, _ in truth]).reshape(-1, h, w)
        det_masks = np.array([m for m, _, _ in dets]).reshape(-1, h, w)
        boxes = np.array([[*np.argwhere(m)[:, ::-1].min(0), *(np.argwhere(m)[:, ::-1].max(0) + 1)] for m in det_masks],
                         dtype=float).reshape(-1, 4)
        records.append(record(h, w, gt_masks, np.array([c for _, c, _ in truth], int),
                              np.array([k for _, _, k in truth], int), det_masks, boxes,
                              np.array([c for _, c, _ in dets], int), np.array([s for _, _, s in dets], float)))
    return records


def reference_stats(h, w, images, class_ids, iou_type):
    """pycocotools as its README uses it: a ground-truth COCO object and loadRes on a list of results."""
    annotations, results = [], []
    for image_id, (truth, dets) in enumerate(images, 1):
        for mask, category, crowd in truth:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": rle, "area": float(mask_utils.area(rle)),
                                "bbox": list(mask_utils.toBbox(rle)), "iscrowd": crowd})
        for mask, category, score in dets:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            result = {"image_id": image_id, "category_id": category, "score": score}
            if iou_type == "segm":
                result["segmentation"] = rle
            else:
                ys, xs = np.nonzero(mask)
                result["bbox"] = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                                  float(ys.max() + 1 - ys.min())]
            results.append(result)
    with contextlib.redirect_stdout(io.StringIO()):
        truth_set = COCO()
        truth_set.dataset = {"images": [{"id": i + 1, "height": h, "width": w} for i in range(len(images))],
                             "categories": [{"id": c} for c in class_ids], "annotations": annotations}
        truth_set.createIndex()
        evaluator = COCOeval(truth_set, truth_set.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_ap_equals_pycocotools(iou_type):
    h, w, images = hand_built()
    class_ids = [3, 4, 5, 6]
    ours = evaluate_records(to_records(h, w, images), class_ids, iou_type)
    reference = reference_stats(h, w, images, class_ids, iou_type)
    assert [ours.stats[name] for name in STAT_NAMES] == pytest.approx(list(reference.stats), abs=1e-12)
    assert 0 < ours.stats["ap"] < 1  # a real mix of hits and misses, not a degenerate case
    precision = reference.eval["precision"][:, :, :, 0, -1]
    for k in range(len(class_ids)):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        expected = valid.mean() if valid.size else np.nan
        assert ours.per_class_ap[k] == pytest.approx(expected, nan_ok=True, abs=1e-12)
    assert np.isnan(ours.per_class_ap[3])  # class 6 has no ground truth
    assert ours.per_class_ap[2] == 0  # class 5 was never predicted


def test_no_detection_at_all_scores_zero_and_the_table_counts_objects():
    h, w, images = hand_built()
    empty = [(truth, []) for truth, _ in images]
    metrics, per_class, _ = coco_metrics(to_records(h, w, empty), [3, 4, 5, 6], ["a", "b", "c", "d"])
    assert metrics["mask_ap"] == 0 and metrics["box_ap"] == 0
    assert per_class["instances"].tolist() == [2, 2, 1, 0]  # the crowd region is not counted
    assert per_class["detections"].tolist() == [0, 0, 0, 0]
