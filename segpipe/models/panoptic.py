"""Panoptic models: Panoptic-DeepLab (bottom-up) on a U-Net trunk, and Panoptic FPN (Mask R-CNN plus a semantic
FPN head on the same features). Both train from scratch; their outputs go through
:mod:`segpipe.panoptic_postprocess`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.models.mask_rcnn import InstanceSegmenter, build_mask_rcnn, group_norm
from segpipe.models.unet import UNet


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), group_norm(out_channels),
                         nn.ReLU(inplace=True))


def _head(in_channels: int, channels: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(_conv_block(in_channels, channels), nn.Conv2d(channels, outputs, 1))


class PanopticDeepLab(nn.Module):
    """Panoptic-DeepLab's three heads on a shared U-Net trunk (light enough for CPUs): semantic logits, a centre
    heatmap (regressed to Gaussians, no sigmoid) and offsets (dy, dx) from every pixel to its instance's centre,
    all at the input resolution."""

    OUTPUTS = ("semantic", "center", "offset")

    def __init__(self, num_classes: int, head_channels: int, depth: int, base_width: int, residual: bool) -> None:
        super().__init__()
        self.trunk = UNet(num_classes, depth, base_width, residual)
        self.trunk.head = nn.Identity()  # the heads below replace it
        width = self.trunk.feature_channels
        self.semantic = _head(width, head_channels, num_classes)
        self.center = _head(width, head_channels, 1)
        self.offset = _head(width, head_channels, 2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2:]
        features = self.trunk.decode(images)
        return tuple(head(features)[..., :height, :width] for head in (self.semantic, self.center, self.offset))


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch (Kirillov et al. 2019), slimmed: every FPN level from stride 4 to 32 through
    one conv-GN-ReLU, upsampled to stride 4 and summed, then per-class logits upsampled to the input."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, levels: int = 4) -> None:
        super().__init__()
        self.levels = [str(level) for level in range(levels)]
        self.lateral = nn.ModuleList(_conv_block(in_channels, channels) for _ in self.levels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor], size: Any) -> torch.Tensor:
        finest = features[self.levels[0]]
        merged = self.lateral[0](finest)
        for name, lateral in zip(self.levels[1:], self.lateral[1:], strict=True):
            merged = merged + F.interpolate(lateral(features[name]), size=finest.shape[-2:], mode="bilinear",
                                            align_corners=False)
        return F.interpolate(self.classifier(merged), size=size, mode="bilinear", align_corners=False)


class PanopticFPN(InstanceSegmenter):
    """Mask R-CNN and a semantic FPN head sharing one backbone. Training returns (loss terms, logits); inference
    returns, per image, the detections (canonical class ids) plus ``semantic`` logits at the image's size.
    The images of one call share a size (as in segpipe's batches)."""

    def __init__(self, detector: nn.Module, class_ids: list[int], num_classes: int, head_channels: int) -> None:
        super().__init__(detector, class_ids)
        self.semantic_head = SemanticFPNHead(detector.backbone.out_channels, head_channels, num_classes)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        detector = self.detector
        size = images[0].shape[-2:]
        mapped = [{**t, "labels": self.lookup[t["labels"]]} for t in targets] if targets is not None else None
        batch, mapped = detector.transform(images, mapped)
        features = detector.backbone(batch.tensors)
        proposals, rpn_losses = detector.rpn(batch, features, mapped)
        detections, roi_losses = detector.roi_heads(features, proposals, batch.image_sizes, mapped)
        height, width = batch.image_sizes[0]
        logits = self.semantic_head(features, batch.tensors.shape[-2:])[..., :height, :width]
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if targets is not None:
            return {**rpn_losses, **roi_losses}, logits
        detections = detector.transform.postprocess(detections, batch.image_sizes, [size] * len(images))
        return [{**found, "labels": self.class_ids[found["labels"]], "semantic": semantic}
                for found, semantic in zip(detections, logits, strict=True)]


class ExportablePanopticFPN(nn.Module):
    """One NCHW image (batch 1) in; boxes, labels, scores, masks and the semantic logits (1xCxHxW) out."""

    OUTPUTS = ("boxes", "labels", "scores", "masks", "semantic")

    def __init__(self, model: PanopticFPN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found = self.model([images[0]])[0]
        return (*(found[name] for name in self.OUTPUTS[:-1]), found["semantic"].unsqueeze(0))


def build_panoptic_deeplab(config: dict[str, Any], published: str | None = None) -> PanopticDeepLab:
    """Panoptic-DeepLab of a model config: its U-Net trunk (``config["unet"]``) and heads."""
    unet = config["unet"]
    return PanopticDeepLab(config["num_classes"], config["panoptic"]["head_channels"], unet["depth"],
                           unet["base_width"], unet["residual"])


def build_panoptic_fpn(config: dict[str, Any], published: str | None = None) -> PanopticFPN:
    """Panoptic FPN of a model config: the CPU Mask R-CNN over the object classes plus the semantic head."""
    detector = build_mask_rcnn("maskrcnn_resnet18_fpn", len(config["class_ids"]) + 1, config["mask_rcnn"])
    return PanopticFPN(detector, config["class_ids"], config["num_classes"], config["panoptic"]["head_channels"])
