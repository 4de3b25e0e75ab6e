"""Whole-image or sliding-window inference at the input's own resolution, for any logits function."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def sliding_logits(run: LogitsFn, images: torch.Tensor, window: tuple[int, int], stride: tuple[int, int],
                   num_classes: int) -> torch.Tensor:
    """Average the logits of overlapping windows (inputs smaller than the window are padded)."""
    batch, _, height, width = images.shape
    pad_h, pad_w = max(window[0] - height, 0), max(window[1] - width, 0)
    padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
    full_h, full_w = padded.shape[-2:]
    total = torch.zeros((batch, num_classes, full_h, full_w), dtype=torch.float32, device=images.device)
    count = torch.zeros((1, 1, full_h, full_w), dtype=torch.float32, device=images.device)
    for top in _starts(full_h, window[0], stride[0]):
        for left in _starts(full_w, window[1], stride[1]):
            crop = padded[..., top:top + window[0], left:left + window[1]]
            total[..., top:top + window[0], left:left + window[1]] += run(crop).float()
            count[..., top:top + window[0], left:left + window[1]] += 1
    return (total / count)[..., :height, :width]


def infer(run: LogitsFn, images: torch.Tensor, mode: str, num_classes: int, window: tuple[int, int] = (256, 256),
          stride: tuple[int, int] = (192, 192)) -> torch.Tensor:
    """NCHW logits at the resolution of ``images`` (normalised float NCHW)."""
    if mode == "sliding":
        return sliding_logits(run, images, window, stride, num_classes)
    return run(images).float()
