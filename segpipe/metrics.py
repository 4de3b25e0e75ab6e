"""Semantic segmentation metrics from one confusion matrix (torchmetrics' definitions), plus boundary F1.

Macro averages follow torchmetrics: a class counts when it occurs in the ground truth or the prediction
(tp + fp + fn > 0); a class that is predicted but absent from the ground truth scores 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segpipe.distributed import reduce_sum


def _safe_divide(num: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    return torch.where(denom > 0, num / denom.clamp(min=1e-12), torch.zeros_like(num))


class ConfusionMatrix:
    """Accumulates a num_classes x num_classes matrix (rows: ground truth, columns: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true label maps (any shape, same shape)."""
        keep = target != self.ignore_index
        index = target[keep].long().cpu() * self.num_classes + prediction[keep].long().cpu()
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def reduce(self) -> None:
        """Sum the matrix over all processes (no-op without torch.distributed)."""
        self.matrix = reduce_sum(self.matrix)

    def per_class(self) -> dict[str, torch.Tensor]:
        m = self.matrix.double()
        tp = torch.diag(m)
        fp, fn = m.sum(0) - tp, m.sum(1) - tp
        return {
            "iou": _safe_divide(tp, tp + fp + fn),
            "accuracy": _safe_divide(tp, tp + fn),
            "dice": _safe_divide(2 * tp, 2 * tp + fp + fn),
            "support": m.sum(1),
            "present": (tp + fp + fn) > 0,
        }

    def compute(self) -> dict[str, float]:
        """Pixel accuracy, mean class accuracy, mIoU, frequency-weighted IoU and mean Dice."""
        per = self.per_class()
        present = per["present"].double()
        total = self.matrix.sum().double()

        def macro(values: torch.Tensor) -> float:
            return float((values * present).sum() / present.sum()) if present.sum() else 0.0

        return {
            "pixel_accuracy": float(torch.diag(self.matrix).sum() / total) if total else 0.0,
            "mean_accuracy": macro(per["accuracy"]),
            "miou": macro(per["iou"]),
            "fwiou": float((per["support"] * per["iou"]).sum() / total) if total else 0.0,
            "mean_dice": macro(per["dice"]),
        }


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of a boolean NxHxW mask that have a 4-neighbour outside it."""
    inner = -F.max_pool2d(-mask.float().unsqueeze(1), 3, stride=1, padding=1)
    return (mask & (inner.squeeze(1) < 0.5)).bool()


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return mask
    return F.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, stride=1, padding=radius).squeeze(1).bool()


class BoundaryF1:
    """Mean boundary F1 over (image, class) pairs (Csurka et al.): boundary pixels match within ``tolerance``."""

    def __init__(self, num_classes: int, ignore_index: int, tolerance: int) -> None:
        self.num_classes, self.ignore_index, self.tolerance = num_classes, ignore_index, tolerance
        self.total = torch.zeros(2, dtype=torch.float64)  # sum of F1, number of pairs

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of NxHxW predicted and true label maps."""
        valid = target != self.ignore_index
        for cls in range(self.num_classes):
            gt, pred = (target == cls) & valid, (prediction == cls) & valid
            gt_b, pred_b = _boundary(gt) & valid, _boundary(pred) & valid
            n_gt, n_pred = gt_b.sum((1, 2)).double(), pred_b.sum((1, 2)).double()
            counted = (n_gt + n_pred) > 0
            if not counted.any():
                continue
            precision = _safe_divide((pred_b & _dilate(gt_b, self.tolerance)).sum((1, 2)).double(), n_pred)
            recall = _safe_divide((gt_b & _dilate(pred_b, self.tolerance)).sum((1, 2)).double(), n_gt)
            f1 = _safe_divide(2 * precision * recall, precision + recall)
            self.total += torch.stack([f1[counted].sum(), counted.sum().double()])

    def reduce(self) -> None:
        """Sum over all processes (no-op without torch.distributed)."""
        self.total = reduce_sum(self.total)

    def compute(self) -> float:
        return float(self.total[0] / self.total[1]) if self.total[1] else 0.0
