"""Autoencoder pretraining of a segmentation model's encoder on images alone (their labels are never read).

The configured model's encoder (:mod:`segpipe.models.encoders`) gets a light decoder with **no skip connections**,
so the only path from input to output runs through the encoder's deepest features (with skips an autoencoder can
copy its input), and learns to reconstruct clean images from corrupted ones: Gaussian noise, masked patches
(masked-image modelling) or both. It trains with the same engine as the tasks (:class:`PretrainLearner`), and its
encoder weights initialise the segmentation model (``model.weights: pretrained``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from segpipe.data.canonical import Categories
from segpipe.distributed import reduce_sum
from segpipe.evaluation import Evaluator
from segpipe.models import build_model
from segpipe.models.encoders import Encoder, encoder_of
from segpipe.params import Params
from segpipe.tasks import get_task
from segpipe.tasks.base import Criterion, Learner

VALIDATION_SEED = 0  # validation corrupts every batch the same way, so epochs compare


class Autoencoder(nn.Module):
    """An encoder and a light decoder: a 1x1 projection of the deepest features to ``8 * width`` channels, then
    upsampling conv blocks (each halving the channels, to no fewer than ``width``) back to RGB. Light, so that the
    encoder, not the decoder, has to do the work (and a wide backbone costs no more to pretrain than a narrow one)."""

    def __init__(self, encoder: Encoder, width: int) -> None:
        super().__init__()
        self.encoder = encoder.module
        self._features = encoder.features
        channels = min(encoder.channels, 8 * width)
        layers: list[nn.Module] = [nn.Conv2d(encoder.channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                   nn.ReLU(inplace=True)]
        for _ in range(int(math.log2(encoder.stride))):
            out = max(width, channels // 2)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        return self.decoder(self._features(images))[..., :height, :width]


def corrupt(images: torch.Tensor, settings: dict[str, Any], std: torch.Tensor,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalised images with Gaussian noise (``noise_std`` in 0..1 pixel units) and/or square patches set to 0,
    the mean colour (each ``patch_size`` patch with probability ``mask_ratio``)."""
    corrupted = images
    n, _, height, width = images.shape
    if settings["corruption"] in ("noise", "both"):
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        corrupted = corrupted + noise * settings["noise_std"] / std.to(images.device)[:, None, None]
    if settings["corruption"] in ("mask", "both"):
        patch = settings["patch_size"]
        grid = torch.rand((n, 1, -(-height // patch), -(-width // patch)), generator=generator)
        hidden = (grid < settings["mask_ratio"]).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        corrupted = corrupted.masked_fill(hidden[..., :height, :width].to(images.device), 0.0)
    return corrupted


class ReconstructionCriterion(Criterion):
    """Mean squared error between the reconstruction of the corrupted images and the clean ones."""

    def __init__(self, settings: dict[str, Any], std: list[float]) -> None:
        super().__init__()
        self.settings = settings
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        reconstruction = model(corrupt(images, self.settings, self.std))
        return {"loss": F.mse_loss(reconstruction.float(), images)}


class ReconstructionEvaluator(Evaluator):
    """Validation loss (normalised MSE) and PSNR in 0..1 pixel units, over every validation image."""

    def __init__(self, std: torch.Tensor) -> None:
        self.std = std
        self.sums = torch.zeros(3, dtype=torch.float64)  # squared error (normalised), (pixel units), values

    def process(self, batch: dict[str, Any], outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        clean, reconstruction = (t.float() for t in outputs)
        error = (reconstruction - clean) ** 2
        pixels = error * self.std.to(error.device)[:, None, None] ** 2
        self.sums += torch.tensor([error.sum().item(), pixels.sum().item(), error.numel()], dtype=torch.float64)

    def reduce(self) -> None:
        self.sums = reduce_sum(self.sums)

    def compute(self) -> dict[str, float]:
        count = max(float(self.sums[2]), 1.0)
        mse = float(self.sums[1]) / count
        return {"loss": float(self.sums[0]) / count, "psnr": 10 * math.log10(1 / max(mse, 1e-12))}


class PretrainLearner(Learner):
    """Autoencoder pretraining as the trainer sees it: the model is the configured model's encoder plus a decoder,
    the loss the reconstruction error, the objective the validation PSNR."""

    name = "autoencoder"
    objective = "psnr"
    objective_label = "val PSNR"

    def __init__(self, settings: dict[str, Any], std: list[float]) -> None:
        self.settings = settings
        self.std = torch.tensor(std, dtype=torch.float32)

    @classmethod
    def from_params(cls, params: Params) -> PretrainLearner:
        return cls(params.pretrain.model_dump(), list(params.augment.normalize.std))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PretrainLearner:
        """The learner of a stored autoencoder config (its normalisation does not matter for inference)."""
        return cls(config["pretrain"], [1.0, 1.0, 1.0])

    def model_config(self, params: Params, categories: Categories) -> dict[str, Any]:
        return {**get_task(params.task).model_config(params, categories), "pretrain": self.settings}

    def build_model(self, config: dict[str, Any], weights: str | None = None) -> nn.Module:
        model = build_model(config)
        return Autoencoder(encoder_of(model), config["pretrain"]["decoder_width"])

    def criterion(self, params: Params, categories: Categories, train: pd.DataFrame) -> Criterion:
        return ReconstructionCriterion(self.settings, self.std.tolist())

    def validation_evaluator(self, categories: Categories, criterion: Criterion, config: dict[str, Any]) -> Evaluator:
        return ReconstructionEvaluator(self.std)

    def forward_eval(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        return images, model(corrupt(images, self.settings, self.std, generator))


def encoder_weights(autoencoder_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's part of an autoencoder's state dict, keyed as the encoder module's own."""
    return {key.removeprefix("encoder."): value for key, value in autoencoder_state.items()
            if key.startswith("encoder.")}
