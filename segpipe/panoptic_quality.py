"""Panoptic quality (PQ = SQ x RQ) with the rules of the official COCO panoptic evaluation (panopticapi).

An image is a map of segment ids (0 = VOID) plus the list of its segments (id, category, iscrowd, area). The
rules, as panopticapi applies them:

- a predicted and a ground-truth segment match when they have the same category, the ground truth is not a crowd
  region and their IoU is strictly above 0.5 (so a match is unique);
- the union leaves out the predicted pixels that lie on VOID: ``|P| + |G| - |P & G| - |P & VOID|``;
- an unmatched prediction is not a false positive when more than half of it lies on VOID or on the crowd region
  of its category (only one crowd region per category counts: the last one listed);
- ground-truth areas come from the segment list, predicted areas from the map;
- categories without any TP, FP or FN are left out of the means; SQ of a category without TP is 0.

Everything per image comes from one ``bincount`` over the pair of id maps, each renumbered densely by its segment
list (a binary search per pixel among the listed ids), so the cost is a few passes over the pixels, whatever the
number of segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

VOID = 0
MATCH_IOU = 0.5
IGNORED_SHARE = 0.5


class PanopticError(ValueError):
    """An id map and its segment list disagree (an id without a segment, a segment without pixels, ...)."""


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic image; ``area`` None means: count it on the map."""

    id: int
    category: int
    iscrowd: bool = False
    area: int | None = None


@dataclass(frozen=True)
class PanopticCategory:
    id: int
    isthing: bool
    name: str = ""


@dataclass
class PQStat:
    """True positives, false positives, false negatives and the sum of matched IoUs, per category."""

    category_ids: list[int]
    tp: np.ndarray = field(default=None)  # type: ignore[assignment]
    fp: np.ndarray = field(default=None)  # type: ignore[assignment]
    fn: np.ndarray = field(default=None)  # type: ignore[assignment]
    iou: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.category_ids)
        for name, dtype in (("tp", np.int64), ("fp", np.int64), ("fn", np.int64), ("iou", np.float64)):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(n, dtype))
        self.index = {c: i for i, c in enumerate(self.category_ids)}

    def __iadd__(self, other: PQStat) -> PQStat:
        for name in ("tp", "fp", "fn", "iou"):
            getattr(self, name).__iadd__(getattr(other, name))
        return self

    def as_array(self) -> np.ndarray:
        """tp, fp, fn, iou as one float64 (4, C) array (what processes sum)."""
        return np.stack([self.tp, self.fp, self.fn, self.iou]).astype(np.float64)

    @classmethod
    def from_array(cls, category_ids: list[int], values: np.ndarray) -> PQStat:
        tp, fp, fn, iou = values
        return cls(category_ids, tp.round().astype(np.int64), fp.round().astype(np.int64),
                   fn.round().astype(np.int64), iou.astype(np.float64))

    def categories_of(self, ids: Iterable[int], where: str) -> np.ndarray:
        """Positions of category ids in this stat; an unknown id is an error naming ``where``."""
        try:
            return np.array([self.index[int(c)] for c in ids], dtype=np.int64)
        except KeyError as exc:
            raise PanopticError(f"{where}: category id {exc.args[0]} is not in the category list") from None


def _dense(ids: np.ndarray, listed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ids of ``listed`` plus VOID, and each pixel's position among them (pixels of any other id
    get the position after the last)."""
    keys = np.unique(np.append(listed, VOID))
    flat = ids.ravel()
    positions = np.searchsorted(keys, flat)
    positions[keys[np.minimum(positions, len(keys) - 1)] != flat] = len(keys)
    return keys, positions


def image_stat(gt_ids: np.ndarray, gt_segments: Sequence[Segment], pred_ids: np.ndarray,
               pred_segments: Sequence[Segment], stat: PQStat, where: str = "image") -> None:
    """Add one image's TP / FP / FN / IoU to ``stat`` (``where`` names the image in errors)."""
    if gt_ids.shape != pred_ids.shape:
        raise PanopticError(f"{where}: the prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]}, the ground truth "
                            f"{gt_ids.shape[1]}x{gt_ids.shape[0]} (width x height)")
    gt_listed = np.array([s.id for s in gt_segments], np.int64)
    pred_listed = np.array([s.id for s in pred_segments], np.int64)
    gt_keys, gt_dense = _dense(gt_ids, gt_listed)
    pred_keys, pred_dense = _dense(pred_ids, pred_listed)
    unlisted = pred_dense == len(pred_keys)
    if unlisted.any():
        raise PanopticError(f"{where}: segment id {int(pred_ids.ravel()[unlisted.argmax()])} is in the prediction's "
                            f"PNG but not in its segments_info")
    columns = len(pred_keys) + 1
    pairs = np.bincount(gt_dense * columns + pred_dense, minlength=(len(gt_keys) + 1) * columns)
    pairs = pairs.reshape(len(gt_keys) + 1, columns)

    pred_col = np.searchsorted(pred_keys, pred_listed)
    pred_area = pairs.sum(0)[pred_col]
    if (pred_area == 0).any():
        raise PanopticError(f"{where}: segment id {int(pred_listed[pred_area == 0][0])} is in the prediction's "
                            f"segments_info but has no pixels in its PNG")
    gt_row = np.searchsorted(gt_keys, gt_listed)
    gt_cat = stat.categories_of((s.category for s in gt_segments), f"{where} (ground truth)")
    pred_cat = stat.categories_of((s.category for s in pred_segments), f"{where} (prediction)")
    gt_crowd = np.array([s.iscrowd for s in gt_segments], bool)
    counted = pairs.sum(1)
    gt_area = np.array([s.area if s.area is not None else counted[r] for s, r in zip(gt_segments, gt_row, strict=True)],
                       np.int64)
    inter = pairs[gt_row][:, pred_col]
    on_void = pairs[np.searchsorted(gt_keys, VOID), pred_col]

    union = gt_area[:, None] + pred_area[None, :] - inter - on_void[None, :]
    candidate = (gt_cat[:, None] == pred_cat[None, :]) & ~gt_crowd[:, None] & (inter > 0)
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=candidate)
    matched = candidate & (iou > MATCH_IOU)
    gt_hit, pred_hit = np.nonzero(matched)
    np.add.at(stat.tp, gt_cat[gt_hit], 1)
    np.add.at(stat.iou, gt_cat[gt_hit], iou[gt_hit, pred_hit])

    missed = ~matched.any(1) & ~gt_crowd
    np.add.at(stat.fn, gt_cat[missed], 1)

    crowd_of = {int(gt_cat[i]): i for i in np.flatnonzero(gt_crowd)}  # the last crowd region listed wins
    ignored = on_void.astype(np.float64)
    for column, category in enumerate(pred_cat):
        if int(category) in crowd_of:
            ignored[column] += inter[crowd_of[int(category)], column]
    false = ~matched.any(0) & ~(ignored / np.maximum(pred_area, 1) > IGNORED_SHARE)
    np.add.at(stat.fp, pred_cat[false], 1)


@dataclass
class PQResult:
    """PQ, SQ, RQ and the number of counted categories, for all categories, things and stuff; per category."""

    summary: dict[str, dict[str, float]]  # All / Things / Stuff -> pq, sq, rq, n
    per_class: dict[int, dict[str, float]]  # category id -> pq, sq, rq, tp, fp, fn (0 for an absent category)

    def metrics(self) -> dict[str, float]:
        """Flat metric names: pq, sq, rq, pq_things, ..., rq_stuff."""
        flat = {}
        for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
            for key in ("pq", "sq", "rq"):
                flat[f"{key}{suffix}"] = self.summary[group][key]
        return flat


def pq_result(stat: PQStat, categories: Sequence[PanopticCategory]) -> PQResult:
    """Average ``stat`` over the categories that have a TP, FP or FN (0 for a group without any, with n 0)."""
    per_class: dict[int, dict[str, float]] = {}
    for category in categories:
        i = stat.index[category.id]
        tp, fp, fn, iou = int(stat.tp[i]), int(stat.fp[i]), int(stat.fn[i]), float(stat.iou[i])
        denominator = tp + 0.5 * fp + 0.5 * fn
        per_class[category.id] = {"pq": iou / denominator if denominator else 0.0, "sq": iou / tp if tp else 0.0,
                                  "rq": tp / denominator if denominator else 0.0, "tp": tp, "fp": fp, "fn": fn}
    summary = {}
    for group, keep in (("All", lambda c: True), ("Things", lambda c: c.isthing), ("Stuff", lambda c: not c.isthing)):
        counted = [per_class[c.id] for c in categories
                   if keep(c) and sum(per_class[c.id][k] for k in ("tp", "fp", "fn"))]
        n = len(counted)
        summary[group] = {key: sum(c[key] for c in counted) / n if n else 0.0 for key in ("pq", "sq", "rq")}
        summary[group]["n"] = n
    return PQResult(summary, per_class)
