"""Losses for semantic segmentation: cross-entropy (optionally class-weighted), Dice, CE + Dice, focal."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segpipe.errors import SegpipeError
from segpipe.params import LossParams


def median_frequency_weights(class_pixels: np.ndarray, image_pixels: np.ndarray) -> list[float]:
    """SegNet's weights: freq(c) = pixels of c / pixels of images containing c; weight = median(freq) / freq(c)."""
    pixels = np.asarray(class_pixels, dtype=np.float64)  # samples x classes
    present = pixels > 0
    image_total = np.asarray(image_pixels, dtype=np.float64)[:, None] * present
    freq = np.divide(pixels.sum(0), image_total.sum(0), out=np.zeros(pixels.shape[1]), where=image_total.sum(0) > 0)
    median = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    return [float(median / f) if f > 0 else 0.0 for f in freq]


class DiceLoss(nn.Module):
    """1 - mean soft Dice over the classes present in the batch (ground truth or prediction)."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.float().softmax(1) * valid
        onehot = F.one_hot(target.clamp(max=num_classes - 1) * valid.squeeze(1), num_classes).permute(0, 3, 1, 2)
        onehot = onehot * valid
        inter = (probs * onehot).sum((0, 2, 3))
        total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = (2 * inter + 1.0) / (total + 1.0)
        return 1 - dice[total > 0].mean() if (total > 0).any() else logits.sum() * 0


class FocalLoss(nn.Module):
    """Multi-class focal loss: cross-entropy scaled by (1 - p_true) ** gamma, ignore pixels excluded."""

    def __init__(self, gamma: float, ignore_index: int, weight: torch.Tensor | None) -> None:
        super().__init__()
        self.gamma, self.ignore_index = gamma, ignore_index
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction="none")
        p_true = torch.exp(-F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none"))
        valid = target != self.ignore_index
        return ((1 - p_true) ** self.gamma * ce)[valid].sum() / valid.sum().clamp(min=1)


class CombinedLoss(nn.Module):
    """Cross-entropy plus ``dice_weight`` times Dice."""

    def __init__(self, ce: nn.Module, dice: nn.Module, dice_weight: float) -> None:
        super().__init__()
        self.ce, self.dice, self.dice_weight = ce, dice, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


def build_loss(params: LossParams, num_classes: int, ignore_index: int,
               median_weights: list[float] | None = None) -> nn.Module:
    """The loss from params; ``median_weights`` are used when class_weights is 'median_frequency'."""
    weight = None
    if params.class_weights == "median_frequency":
        weight = torch.tensor(median_weights, dtype=torch.float32)
    elif isinstance(params.class_weights, list):
        if len(params.class_weights) != num_classes:
            raise SegpipeError(f"train.loss.class_weights has {len(params.class_weights)} values; "
                               f"the dataset has {num_classes} classes")
        weight = torch.tensor(params.class_weights, dtype=torch.float32)
    ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
    if params.name == "ce":
        return ce
    if params.name == "dice":
        return DiceLoss(ignore_index)
    if params.name == "ce_dice":
        return CombinedLoss(ce, DiceLoss(ignore_index), params.dice_weight)
    return FocalLoss(params.focal_gamma, ignore_index, weight)
