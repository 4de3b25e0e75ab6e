"""U-Net with configurable depth and width, plain double-conv or ResNet-style residual blocks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """Two 3x3 conv-BN-ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs plus identity, 1x1 projection when channels change)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.project = nn.Identity() if in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.project(x), inplace=True)


class UNet(nn.Module):
    """U-Net: ``depth`` downsamplings, widths ``base_width * 2**level``; any input size (padded inside)."""

    def __init__(self, num_classes: int, depth: int = 4, base_width: int = 16, residual: bool = False) -> None:
        super().__init__()
        block = ResidualBlock if residual else DoubleConv
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.stem = block(3, widths[0])
        self.down = nn.ModuleList(block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.merge = nn.ModuleList(block(widths[i] * 2, widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2**depth
        self.feature_channels = widths[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return self.head(self.decode(x))[..., :height, :width]

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's full-resolution features (``feature_channels`` wide), padded to a multiple of
        2**depth at the bottom and right; the caller crops them."""
        height, width = x.shape[-2:]
        # always pad (by zero when already divisible): no branch on the size, so exported graphs stay dynamic
        x = F.pad(x, (0, (-width) % self.multiple, 0, (-height) % self.multiple), mode="replicate")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        out = skips.pop()
        for level in reversed(range(len(self.up))):
            out = self.merge[level](torch.cat([self.up[level](out), skips.pop()], dim=1))
        return out


def build_unet(config: dict[str, Any], published: str | None = None) -> UNet:
    """The U-Net of a model config: ``config["unet"]`` (depth, base_width, residual) for ``config["num_classes"]``
    (no published weights exist)."""
    return UNet(config["num_classes"], **config["unet"])
