"""The model registry: names to builders, optional pretrained or checkpoint weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models import segmentation as tvseg

from segpipe.checkpoint import load_into
from segpipe.errors import SegpipeError
from segpipe.models.download import download_guard
from segpipe.models.unet import UNet


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
MODEL_NAMES = ("unet", *_TORCHVISION)


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


def create_model(name: str, num_classes: int, weights: str | None = None, **unet_options) -> nn.Module:
    """Build model ``name`` for ``num_classes``; ``weights`` is None, 'backbone', 'full' or a checkpoint path."""
    if name not in MODEL_NAMES:
        raise SegpipeError(f"model.name '{name}' is unknown; choose one of {', '.join(MODEL_NAMES)}")
    pretrained = weights if weights in ("backbone", "full") else None
    if name == "unet":
        if pretrained:
            raise SegpipeError("model.weights: 'backbone'/'full' exist only for torchvision models, not unet")
        model = UNet(num_classes, **unet_options)
    else:
        model = _torchvision(name, num_classes, pretrained)
    if weights and not pretrained:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a segpipe checkpoint or a plain state dict (``weights_only``) into ``model``; every tensor must fit."""
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"model.weights: {path} is not a file; give a checkpoint path, 'backbone', 'full' or null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user error
        raise SegpipeError(f"{path}: cannot be read as a weights-only checkpoint ({exc})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegpipeError(f"model.weights: {path} holds no model weights (a segpipe model.pt or a state dict)")
    load_into(model, state, f"model.weights {path}", "check model.name, model.unet and the classes it was "
                                                    "trained on")
