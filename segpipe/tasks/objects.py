"""What the object tasks (instance and panoptic) share: their per-image targets, batches of them, the targets
Mask R-CNN trains on, the check that a class list has object classes, and the input an exported detector is traced
on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segpipe.data.canonical import Categories
from segpipe.errors import SegpipeError

TARGET_KEYS = ("boxes", "labels", "masks", "iscrowd")


def pixel_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Inclusive pixel boxes (as ``masks_to_boxes`` gives them) as the box edges: a 1-pixel object is 1 wide."""
    return torch.cat([boxes[:, :2], boxes[:, 2:] + 1], 1).float()


def detection_targets(batch: dict[str, Any], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Mask R-CNN's targets of a batch on ``device``; crowd regions are left out of training (COCO's convention)."""
    targets = []
    for target in batch["targets"]:
        keep = ~target["iscrowd"]
        targets.append({"boxes": pixel_boxes(target["boxes"][keep]).to(device),
                        "labels": target["labels"][keep].to(device), "masks": target["masks"][keep].to(device)})
    return targets


def collate_instances(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Images and semantic maps stacked (same size within a batch); the objects of each image kept as its own
    target dict."""
    return {"image": torch.stack([s["image"] for s in samples]),
            "semantic": torch.stack([s["semantic"].as_subclass(torch.Tensor) for s in samples]),
            "targets": [{key: s[key].as_subclass(torch.Tensor) for key in TARGET_KEYS} for s in samples]}


def require_things(task: str, categories: Categories) -> None:
    """Refuse to train an object task on a class list without object classes."""
    if not any(c.isthing for c in categories.items):
        raise SegpipeError(f"task: {task} needs object classes, and no class has isthing: true; mark the "
                           f"countable classes with isthing: true in the class list")


def busiest_input(inputs: list[torch.Tensor], runs: list[list[Any]]) -> torch.Tensor:
    """The input whose run (boxes first) has the most detections: a detector traced on an image without any can
    lose its mask branch (torchvision #3291)."""
    return inputs[int(np.argmax([len(run[0]) for run in runs[:len(inputs)]]))]
