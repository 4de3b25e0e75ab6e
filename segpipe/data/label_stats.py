"""Warnings about label coverage that would otherwise pass silently: empty classes, mostly-ignore masks."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from segpipe.data.canonical import Categories


def ignore_share(class_pixels: np.ndarray, ignore_pixels: int) -> float:
    """The share of all mask pixels that are ignore."""
    total = float(class_pixels.sum()) + ignore_pixels
    return ignore_pixels / total if total else 0.0


def empty_class_warnings(class_pixels: np.ndarray, categories: Categories, where: str) -> list[str]:
    """A line naming the classes with no pixel at all in ``where`` (none when every class has pixels)."""
    empty = [categories.names[i] for i in np.flatnonzero(class_pixels == 0)]
    if not empty:
        return []
    many = len(empty) > 1
    return [f"{where}: class{'es' if many else ''} {', '.join(empty)} {'have' if many else 'has'} no pixels at all; "
            f"the model cannot learn {'them' if many else 'it'}"]


def ignore_warnings(class_pixels: np.ndarray, ignore_pixels: int, threshold: float, where: str) -> list[str]:
    """A line when ignore covers more than ``threshold`` of the mask pixels in ``where``."""
    share = ignore_share(class_pixels, ignore_pixels)
    if share <= threshold:
        return []
    return [f"{where}: {share:.0%} of the mask pixels are ignore (more than clean.warn_ignore_share "
            f"{threshold:.0%}); check ingest.mask_folder.ignore_index / label_map"]


def binary_mask_hint(source_values: Iterable[Iterable[int]], class_pixels: np.ndarray,
                     categories: Categories) -> str | None:
    """A hint for binary masks stored as 0/255 whose 255 was read as ignore, naming the label_map that fixes it."""
    seen = set()
    for values in source_values:
        seen.update(int(v) for v in values)
    empty = [i for i in np.flatnonzero(class_pixels == 0) if i > 0]
    if seen != {0, 255} or categories.ignore_index != 255 or not empty:
        return None
    target = int(empty[0])
    return (f"the masks hold only the values 0 and 255, and 255 is read as ignore; if 255 marks "
            f"'{categories.names[target]}', set ingest.mask_folder.label_map: {{255: {target}}}")


def missing_from_eval_splits(class_pixels_by_split: dict[str, np.ndarray], categories: Categories) -> list[str]:
    """One line per evaluation split (val, test) that lacks a class the train split has."""
    train = class_pixels_by_split.get("train")
    if train is None:
        return []
    warnings = []
    for name, pixels in class_pixels_by_split.items():
        if name == "train" or not pixels.sum():
            continue
        absent = [categories.names[i] for i in np.flatnonzero((train > 0) & (pixels == 0))]
        if absent:
            warnings.append(f"{name}: class{'es' if len(absent) > 1 else ''} {', '.join(absent)} "
                            f"{'are' if len(absent) > 1 else 'is'} in train but not in {name}, so {name} "
                            f"metrics say nothing about {'them' if len(absent) > 1 else 'it'}")
    return warnings
