"""Model outputs to a panoptic map: the one place that evaluation, validation, the export parity check and
``predict`` take their panoptic results from.

A panoptic map is a pair of HxW int64 tensors: ``category`` (class id, -1 = VOID) and ``instance`` (1..n on thing
pixels, 0 elsewhere). Two recipes:

- Panoptic-DeepLab: centres are the local maxima of the heatmap (max-pooling as NMS) above a threshold, the best
  ``top_k`` kept; every thing pixel (by the semantic argmax) joins the centre nearest to where its offset points;
  an instance takes the class most of its pixels vote for;
- Panoptic FPN: detections by score above a threshold, each skipped when more than ``overlap_threshold`` of its
  mask is already taken, else placed on the free pixels; stuff classes of the semantic argmax fill the rest.

In both, a stuff region smaller than ``stuff_area`` pixels becomes VOID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

GROUPING_CHUNK = 1 << 22  # centre x pixel distances computed at once (bounds the memory of large images)


@dataclass
class PanopticMap:
    category: torch.Tensor  # HxW int64, -1 = VOID
    instance: torch.Tensor  # HxW int64, 0 = not an instance


def find_centers(heatmap: torch.Tensor, threshold: float, nms_kernel: int, top_k: int) -> torch.Tensor:
    """(K, 2) y, x of the heatmap's (HxW) local maxima above ``threshold``, best first, at most ``top_k``."""
    scores = heatmap[None, None]
    pooled = F.max_pool2d(scores, nms_kernel, stride=1, padding=nms_kernel // 2)
    peaks = (scores == pooled) & (scores > threshold)
    ys, xs = peaks[0, 0].nonzero(as_tuple=True)
    order = heatmap[ys, xs].argsort(descending=True, stable=True)[:top_k]
    return torch.stack([ys[order], xs[order]], 1)


def group_pixels(things: torch.Tensor, offsets: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Instance ids (1..K, 0 off ``things``) joining each thing pixel to the centre nearest to where its offset
    (2xHxW, dy dx) points."""
    instance = torch.zeros(things.shape, dtype=torch.int64, device=things.device)
    if not len(centers):
        return instance
    ys, xs = things.nonzero(as_tuple=True)
    pointed = torch.stack([ys + offsets[0, ys, xs], xs + offsets[1, ys, xs]], 1)
    chunk = max(1, GROUPING_CHUNK // len(centers))
    nearest = torch.cat([torch.cdist(pointed[i:i + chunk], centers.float()).argmin(1)
                         for i in range(0, len(pointed), chunk)]) if len(pointed) else ys
    instance[ys, xs] = nearest + 1
    return instance


def _majority_classes(instance: torch.Tensor, semantic: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    """The class most pixels of each instance 1..count carry (index 0 unused)."""
    on = instance > 0
    votes = torch.bincount(instance[on] * num_classes + semantic[on], minlength=(count + 1) * num_classes)
    return votes.view(count + 1, num_classes).argmax(1)


def _stuff(category: torch.Tensor, semantic: torch.Tensor, free: torch.Tensor, is_thing: torch.Tensor,
           stuff_area: int) -> None:
    """Give the free pixels their stuff class from ``semantic`` where that class covers at least ``stuff_area`` of
    them (in place); the rest stay VOID."""
    stuff = free & ~is_thing[semantic]
    areas = torch.bincount(semantic[stuff], minlength=len(is_thing))
    keep = stuff & (areas[semantic] >= stuff_area)
    category[keep] = semantic[keep]


def deeplab_panoptic(semantic_logits: torch.Tensor, center: torch.Tensor, offset: torch.Tensor,
                     is_thing: torch.Tensor, settings: dict[str, Any]) -> PanopticMap:
    """Panoptic-DeepLab's post-processing of one image (CxHxW logits, 1xHxW heatmap, 2xHxW offsets)."""
    semantic = semantic_logits.argmax(0)
    things = is_thing[semantic]
    centers = find_centers(center[0].float(), settings["center_threshold"], settings["nms_kernel"], settings["top_k"])
    instance = group_pixels(things, offset.float(), centers)
    category = torch.full_like(semantic, -1)
    classes = _majority_classes(instance, semantic, len(centers), len(is_thing))
    category[things] = classes[instance[things]]
    category[things & (instance == 0)] = -1
    _stuff(category, semantic, ~things, is_thing, settings["stuff_area"])
    return PanopticMap(category, _renumber(instance))


def fpn_panoptic(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor,
                 semantic_logits: torch.Tensor, is_thing: torch.Tensor, settings: dict[str, Any]) -> PanopticMap:
    """Panoptic FPN's merge of one image's detections (masks Nx1xHxW probabilities) and CxHxW semantic logits."""
    semantic = semantic_logits.argmax(0)
    category = torch.full_like(semantic, -1)
    instance = torch.zeros_like(semantic)
    taken = torch.zeros_like(semantic, dtype=torch.bool)
    number = 0
    for index in scores.argsort(descending=True, stable=True).tolist():
        if scores[index] < settings["instance_score_threshold"]:
            break
        mask = masks[index, 0] > settings["mask_threshold"]
        area = int(mask.sum())
        if not area or int((mask & taken).sum()) / area > settings["overlap_threshold"]:
            continue
        mask &= ~taken
        number += 1
        instance[mask], category[mask], taken = number, labels[index], taken | mask
    _stuff(category, semantic, ~taken, is_thing, settings["stuff_area"])
    return PanopticMap(category, instance)


def _renumber(instance: torch.Tensor) -> torch.Tensor:
    """Instance ids 1..n in order of first appearance of each id among those present (empty centres drop out)."""
    present = torch.unique(instance)
    present = present[present > 0]
    lookup = torch.zeros(int(instance.max()) + 1, dtype=torch.int64, device=instance.device)
    lookup[present] = torch.arange(1, len(present) + 1, device=instance.device)
    return lookup[instance]
