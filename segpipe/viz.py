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
    _save(fig, path)


def _save(fig, path: str | Path, dpi: int = 80) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def confusion_matrix_plot(matrix: torch.Tensor, names: list[str], path: str | Path) -> None:
    """Row-normalised confusion matrix (rows: ground truth) as a heat map with the recall on the diagonal."""
    counts = matrix.double()
    normalised = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                value = normalised[i, j].item()
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)")
    fig.tight_layout()
    _save(fig, path)


def prediction_grid(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], categories: Categories,
                    path: str | Path) -> None:
    """One row per sample: image | ground truth | prediction (colours of the classes, ignore left bare)."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for row, (image, truth, prediction) in zip(axes, rows, strict=True):
        for ax, picture, title in zip(row, (image, overlay(image, truth, categories, 0.7),
                                            overlay(image, prediction, categories, 0.7)),
                                      ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(picture.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def training_curves(history: list[dict], path: str | Path) -> None:
    """Losses (left) and validation metrics (right) per epoch: the curves as a picture that needs no browser."""
    epochs = [row["epoch"] for row in history]
    fig, (losses, metrics) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("train_loss", "val_loss"):
        losses.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
    for key in ("val_miou", "val_pixel_accuracy", "val_mean_accuracy"):
        metrics.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
    losses.set_title("loss")
    metrics.set_title("validation")
    metrics.set_ylim(0, 1)
    for ax in (losses, metrics):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
