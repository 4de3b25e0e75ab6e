"""torchvision's semantic models (FCN, DeepLabV3, LRASPP) returning NCHW logits, from scratch or from their
published weights (the catalog, :mod:`segpipe.catalog`, lists them)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models import segmentation as tvseg

from segpipe.models.download import download_guard


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation model that returns the ``out`` logits tensor instead of a dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


_TORCHVISION = {
    "fcn_resnet50": (tvseg.fcn_resnet50, tvseg.FCN_ResNet50_Weights, ResNet50_Weights),
    "deeplabv3_resnet50": (tvseg.deeplabv3_resnet50, tvseg.DeepLabV3_ResNet50_Weights, ResNet50_Weights),
    "deeplabv3_mobilenet_v3_large": (
        tvseg.deeplabv3_mobilenet_v3_large, tvseg.DeepLabV3_MobileNet_V3_Large_Weights, MobileNet_V3_Large_Weights),
    "lraspp_mobilenet_v3_large": (
        tvseg.lraspp_mobilenet_v3_large, tvseg.LRASPP_MobileNet_V3_Large_Weights, MobileNet_V3_Large_Weights),
}


def _replace_heads(model: nn.Module, num_classes: int) -> None:
    """Swap the last classifier convs of a 21-class COCO/VOC model for fresh ones with ``num_classes``."""
    if isinstance(model, tvseg.LRASPP):
        head = model.classifier
        head.low_classifier = nn.Conv2d(head.low_classifier.in_channels, num_classes, 1)
        head.high_classifier = nn.Conv2d(head.high_classifier.in_channels, num_classes, 1)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Conv2d(last.in_channels, num_classes, 1)


def _faster_batchnorm(model: nn.Module) -> None:
    """Use BatchNorm momentum 0.1 from scratch: MobileNetV3's 0.01 suits long ImageNet runs, but on short
    from-scratch runs its running statistics stay near their initial values and evaluation collapses."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1


def _torchvision(name: str, num_classes: int, weights: str | None) -> nn.Module:
    builder, full_weights, backbone_weights = _TORCHVISION[name]
    if weights == "full":
        model = download_guard(lambda: builder(weights=full_weights.DEFAULT), f"{name} weights")
        _replace_heads(model, num_classes)
    elif weights == "backbone":
        model = download_guard(
            lambda: builder(weights=None, weights_backbone=backbone_weights.DEFAULT, num_classes=num_classes),
            f"{name} ImageNet backbone weights")
    else:
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        _faster_batchnorm(model)
    if getattr(model, "aux_classifier", None) is not None:
        model.aux_classifier = None
    return TorchvisionSegmenter(model)


def build_torchvision(config: dict[str, Any], published: str | None = None) -> nn.Module:
    """torchvision's ``config["name"]`` for ``config["num_classes"]``, from scratch or from its ``published``
    weights ('backbone', 'full')."""
    return _torchvision(config["name"], config["num_classes"], published)
