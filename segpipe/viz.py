"""Pictures for people: mask overlays and preview grids (matplotlib, torchvision drawing utils)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks  # noqa: E402

from segpipe.data.canonical import Categories  # noqa: E402
from segpipe.fsutil import atomic_path  # noqa: E402


def overlay(image: torch.Tensor, labels: torch.Tensor, categories: Categories, alpha: float = 0.5) -> torch.Tensor:
    """Colour each class of a HxW label map over a CHW uint8 image; ignore pixels stay as they are."""
    masks = torch.stack([labels == c.id for c in categories.items])
    colors = [tuple(int(v) for v in c.color) for c in categories.items]
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=colors)


def preview_grid(samples: list[dict], categories: Categories, path: str | Path) -> None:
    """Save a grid of augmented samples: each tile is the image with its mask (and instance boxes) overlaid."""
    cols = min(4, len(samples))
    rows = math.ceil(len(samples) / cols)
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 4, rows * 2.1), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, sample in enumerate(samples):
        image = sample["image"]
        tile = overlay(image, sample["semantic"], categories)
        if "boxes" in sample and len(sample["boxes"]):
            tile = draw_bounding_boxes(tile, sample["boxes"], colors="white", width=1)
        ax_img, ax_mask = axes[i // cols, (i % cols) * 2], axes[i // cols, (i % cols) * 2 + 1]
        ax_img.imshow(image.permute(1, 2, 0).numpy())
        ax_mask.imshow(tile.permute(1, 2, 0).numpy())
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
