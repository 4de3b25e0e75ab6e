"""Pictures for people: mask overlays and preview grids (matplotlib, torchvision drawing utils)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.ops import masks_to_boxes  # noqa: E402
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks  # noqa: E402

from segpipe.coco_eval import CocoResult  # noqa: E402
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
    loss_keys = [k for k in history[0] if k.startswith("train_") or k == "val_loss"]
    for key in loss_keys:
        losses.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
    for key in [k for k in history[0] if k.startswith("val_") and k not in loss_keys]:
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


def instance_overlay(image: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, categories: Categories,
                     captions: list[str] | None = None) -> torch.Tensor:
    """Each object's mask in its class colour, with its box and caption (class name, or name and score)."""
    if not len(masks):
        return image
    colors = [tuple(int(v) for v in categories.items[int(c)].color) for c in labels]
    picture = draw_segmentation_masks(image, masks.bool(), alpha=0.55, colors=colors)
    boxes = masks_to_boxes(masks.bool()).float()
    names = captions or [categories.items[int(c)].name for c in labels]
    return draw_bounding_boxes(picture, boxes, labels=names, colors=colors, width=1)


def instance_grid(rows: list[tuple[torch.Tensor, dict, dict]], categories: Categories, mask_threshold: float,
                  path: str | Path, min_score: float = 0.5) -> None:
    """One row per image: image | ground truth | detections scoring at least ``min_score`` (class and score)."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for row, (image, truth, output) in zip(axes, rows, strict=True):
        keep = output["scores"] >= min_score
        masks = output["masks"][keep, 0] > mask_threshold
        nonempty = masks.flatten(1).any(1) if len(masks) else torch.zeros(0, dtype=torch.bool)
        labels, scores = output["labels"][keep][nonempty], output["scores"][keep][nonempty]
        captions = [f"{categories.items[int(c)].name} {s:.2f}" for c, s in zip(labels, scores, strict=True)]
        pictures = (image, instance_overlay(image, truth["masks"], truth["labels"], categories),
                    instance_overlay(image, masks[nonempty], labels, categories, captions))
        for ax, picture, title in zip(row, pictures, ("image", "ground truth", f"prediction (score >= {min_score})"),
                                      strict=True):
            ax.imshow(picture.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def precision_recall_plot(result: CocoResult, names: list[str], path: str | Path) -> None:
    """COCO precision-recall curves at IoU 0.5 per class, and the class mean at IoU 0.5 and 0.75 (mask AP)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    recall = result.recall_thresholds
    precision = np.where(result.precision > -1, result.precision, np.nan)
    for k, name in enumerate(names):
        if not np.isnan(precision[0, :, k]).all():
            label = f"{name} (AP50 {result.per_class_ap50[k]:.2f})"
            ax.plot(recall, precision[0, :, k], linewidth=1, alpha=0.6, label=label)
    with np.errstate(all="ignore"):
        for t, style in ((0, "-"), (5, "--")):
            ax.plot(recall, np.nanmean(precision[t], axis=1), "k" + style, linewidth=2,
                    label=f"mean, IoU {0.5 + 0.05 * t:.2f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("mask precision-recall (COCO)")
    fig.tight_layout()
    _save(fig, path)


def panoptic_overlay(image: torch.Tensor, category: torch.Tensor, instance: torch.Tensor, categories: Categories,
                     alpha: float = 0.55) -> torch.Tensor:
    """Stuff in its class colour, every instance in a shade of its class colour with its outline; VOID left bare."""
    colors = torch.tensor([c.color for c in categories.items], dtype=torch.float32)
    known = category >= 0
    paint = colors[category.clamp(min=0)]
    shade = 0.65 + 0.35 * ((instance * 37) % 11).float() / 10  # neighbouring instances differ in brightness
    paint = torch.where((instance > 0)[..., None], paint * shade[..., None], paint)
    picture = image.permute(1, 2, 0).float()
    picture = torch.where(known[..., None], (1 - alpha) * picture + alpha * paint, picture)
    edges = torch.zeros_like(known)
    edges[1:] |= instance[1:] != instance[:-1]
    edges[:, 1:] |= instance[:, 1:] != instance[:, :-1]
    picture[edges & (instance > 0)] = 255.0
    return picture.clamp(0, 255).to(torch.uint8).permute(2, 0, 1)


def panoptic_grid(rows: list[tuple[torch.Tensor, tuple, tuple]], categories: Categories, path: str | Path) -> None:
    """One row per image: image | ground truth | prediction, each map as (category, instance)."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for row, (image, truth, predicted) in zip(axes, rows, strict=True):
        pictures = (image, panoptic_overlay(image, *truth, categories), panoptic_overlay(image, *predicted, categories))
        for ax, picture, title in zip(row, pictures, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(picture.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def reconstruction_grid(rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], mean: list[float],
                        std: list[float], path: str | Path) -> None:
    """One row per image: input | corrupted | reconstruction (normalised CxHxW tensors, shown as RGB)."""
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.6 * len(rows)), squeeze=False)
    for row, pictures in zip(axes, rows, strict=True):
        for ax, picture, title in zip(row, pictures, ("input", "corrupted", "reconstruction"), strict=True):
            ax.imshow((picture.float().cpu() * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
