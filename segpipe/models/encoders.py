"""The encoder of every segpipe model: the part that autoencoder pretraining learns and fine-tuning starts from.

An :class:`Encoder` is a view on a model (its module holds the model's own parameters, not copies), with the
function that maps images to the deepest feature map and that map's channels and stride:

- U-Net (plain and residual), and Panoptic-DeepLab's U-Net trunk: the stem and the downsampling blocks;
- LRASPP / DeepLabV3 / FCN: torchvision's backbone (MobileNetV3 or ResNet-50), its last returned map;
- Mask R-CNN and Panoptic FPN: the ResNet body under the FPN, its last stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe import checkpoint
from segpipe.checkpoint import load_into
from segpipe.errors import SegpipeError
from segpipe.models.mask_rcnn import InstanceSegmenter
from segpipe.models.panoptic import PanopticDeepLab
from segpipe.models.torchvision_semantic import TorchvisionSegmenter
from segpipe.models.unet import UNet

PROBE_SIZE = 64  # side of the blank image that measures an encoder's output channels and stride


@dataclass
class Encoder:
    module: nn.Module  # the model's own encoder layers (loading into it changes the model)
    features: Callable[[torch.Tensor], torch.Tensor]  # NCHW images -> the deepest feature map
    channels: int
    stride: int


def _unet_features(unet: UNet) -> Callable[[torch.Tensor], torch.Tensor]:
    def features(images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        x = F.pad(images, (0, (-width) % unet.multiple, 0, (-height) % unet.multiple), mode="replicate")
        x = unet.stem(x)
        for down in unet.down:
            x = down(F.max_pool2d(x, 2))
        return x

    return features


def _last_map(body: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda images: list(body(images).values())[-1]


def _parts(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    if isinstance(model, PanopticDeepLab):
        model = model.trunk
    if isinstance(model, UNet):
        return nn.ModuleDict({"stem": model.stem, "down": model.down}), _unet_features(model)
    if isinstance(model, TorchvisionSegmenter):
        return model.model.backbone, _last_map(model.model.backbone)
    if isinstance(model, InstanceSegmenter):
        body = model.detector.backbone.body
        return body, _last_map(body)
    raise SegpipeError(f"{type(model).__name__} has no encoder that segpipe can pretrain")


@torch.no_grad()
def _probe(module: nn.Module, features: Callable[[torch.Tensor], torch.Tensor]) -> tuple[int, int]:
    """Channels and stride of the encoder's output, measured on a blank image (in eval mode, so that no running
    statistic moves)."""
    training = module.training
    module.eval()
    device = next(module.parameters()).device
    output = features(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
    module.train(training)
    return int(output.shape[1]), PROBE_SIZE // int(output.shape[-1])


def encoder_of(model: nn.Module) -> Encoder:
    """The encoder of a segpipe model (any task)."""
    module, features = _parts(model)
    channels, stride = _probe(module, features)
    return Encoder(module, features, channels, stride)


def load_encoder(model: nn.Module, path: str | Path, model_name: str) -> None:
    """Initialise ``model``'s encoder from the pretrain stage's file; an encoder of another shape is an error that
    names both models."""
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"model.weights: pretrained needs {path}; enable pretraining (pretrain.enabled: true) and "
                           f"run dvc repro")
    saved: dict[str, Any] = checkpoint.load(path)
    if not saved.get("encoder"):
        raise SegpipeError(f"{path} holds no encoder (pretrain.enabled is false); set pretrain.enabled: true and "
                           f"run dvc repro")
    load_into(encoder_of(model).module, saved["encoder"], f"{path} (the encoder of {saved['model_name']})",
              f"model.name is {model_name}: pretrain again with this model (dvc repro pretrain)")
