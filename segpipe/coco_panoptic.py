"""The COCO panoptic format: RGB PNGs of segment ids (id = R + 256 G + 256^2 B, 0 = VOID) plus a JSON file with
``images``, ``annotations`` (``file_name``, ``segments_info``) and ``categories`` (with ``isthing``).

Reading and writing it, and scoring a folder of predictions against a folder of ground truth as the official
evaluation does (:mod:`segpipe.panoptic_quality`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.data.imageio import load_color_label
from segpipe.errors import SegpipeError
from segpipe.panoptic_quality import PanopticCategory, PanopticError, PQResult, PQStat, Segment, image_stat, pq_result


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids (int64 HxW) of an HxWx3 COCO panoptic PNG."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """The HxWx3 uint8 COCO panoptic PNG of a map of segment ids (< 256^3)."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def read_ids(path: Path) -> np.ndarray:
    """The segment-id map of a COCO panoptic PNG; a missing or unreadable file is one line naming it."""
    if not Path(path).is_file():
        raise SegpipeError(f"{path}: panoptic PNG not found; check the annotation's file_name")
    return rgb_to_id(load_color_label(path))  # refused from its header when it has too many pixels


def load_panoptic_json(path: Path) -> dict[str, Any]:
    """A COCO panoptic JSON file, checked for the fields this module reads."""
    if not path.is_file():
        raise SegpipeError(f"{path}: panoptic JSON not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegpipeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise SegpipeError(f"{path}: expected a COCO panoptic JSON object with an 'annotations' list")
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or not {"image_id", "file_name", "segments_info"} <= set(annotation):
            raise SegpipeError(f"{path}: annotations[{index}] needs image_id, file_name and segments_info")
        if not isinstance(annotation["file_name"], str) or not isinstance(annotation["segments_info"], list):
            raise SegpipeError(f"{path}: annotations[{index}]: file_name must be a string, segments_info a list")
        for number, segment in enumerate(annotation["segments_info"]):
            if not isinstance(segment, dict) or not {"id", "category_id"} <= set(segment):
                raise SegpipeError(f"{path}: annotations[{index}].segments_info[{number}] needs id and category_id")
    return data


def panoptic_categories(records: list[dict[str, Any]], path: Path) -> list[PanopticCategory]:
    """Categories of a COCO panoptic ``categories`` list (``isthing`` 0/1)."""
    try:
        return [PanopticCategory(int(c["id"]), bool(c["isthing"]), str(c.get("name", c["id"]))) for c in records]
    except (KeyError, TypeError, ValueError):
        raise SegpipeError(f"{path}: every category needs an integer id and isthing") from None


def segments_of(annotation: dict[str, Any], with_area: bool) -> list[Segment]:
    """An annotation's ``segments_info`` as segments; ``with_area`` takes the JSON's areas (ground truth)."""
    return [Segment(int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0)),
                    int(s["area"]) if with_area and "area" in s else None) for s in annotation["segments_info"]]


@dataclass
class FolderScore:
    result: PQResult
    stat: PQStat
    images: int


def evaluate_folders(gt_json: Path, pred_json: Path, gt_dir: Path, pred_dir: Path,
                     categories: list[PanopticCategory] | None = None) -> FolderScore:
    """PQ of the predictions in ``pred_json`` / ``pred_dir`` against ``gt_json`` / ``gt_dir``, matched by
    ``image_id``; the categories are the ground truth JSON's unless given."""
    gt, pred = load_panoptic_json(gt_json), load_panoptic_json(pred_json)
    categories = categories or panoptic_categories(gt.get("categories", []), gt_json)
    stat = PQStat([c.id for c in categories])
    predictions = {a["image_id"]: a for a in pred["annotations"]}
    for truth in gt["annotations"]:
        guess = predictions.get(truth["image_id"])
        if guess is None:
            raise SegpipeError(f"{pred_json}: no prediction for image_id {truth['image_id']} ({truth['file_name']})")
        try:
            image_stat(read_ids(gt_dir / truth["file_name"]), segments_of(truth, True),
                       read_ids(pred_dir / guess["file_name"]), segments_of(guess, False), stat, guess["file_name"])
        except PanopticError as exc:
            raise SegpipeError(str(exc)) from None
    return FolderScore(pq_result(stat, categories), stat, len(gt["annotations"]))


def segments_info(ids: np.ndarray, segments: list[Segment]) -> list[dict[str, Any]]:
    """COCO ``segments_info`` entries (id, category_id, iscrowd, area, bbox [x, y, w, h]) of an id map."""
    entries = []
    for segment in segments:
        ys, xs = np.nonzero(ids == segment.id)
        x, y = int(xs.min()), int(ys.min())
        entries.append({"id": int(segment.id), "category_id": int(segment.category), "iscrowd": int(segment.iscrowd),
                        "area": int(len(ys)), "bbox": [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1]})
    return entries


def document(annotations: list[dict[str, Any]], images: list[dict[str, Any]],
             categories: list[dict[str, Any]]) -> dict[str, Any]:
    """A COCO panoptic JSON document."""
    return {"info": {"description": "written by segpipe"}, "images": images, "annotations": annotations,
            "categories": categories}
