"""Instance annotations (polygons, RLE) into the canonical class and instance maps, shared by the readers.

Every reader that brings objects (COCO JSON, YOLO-seg text files) describes them as :class:`Annotation`\\ s in
COCO's own terms (absolute pixel polygons or RLE) and lets :class:`AnnotatedSample` write the canonical sample:
the image, ``semantic/`` (class per pixel, 0 = background), ``instance/`` (16-bit id per pixel, 0 = none) and the
per-sample instance table (id -> class, iscrowd, areas). Masks come from pycocotools, as in COCO evaluation.
Objects are painted largest first, so a small object on top of a large one stays visible; the pixels a later
object takes from an earlier one are counted in the table (``area`` rasterised, ``pixels`` still visible).
An annotation that cannot become a mask (too few points, no area, unknown class) is not painted: its entry in
the table says why, and clean reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segpipe.data.canonical import INSTANCE_DIR, SEMANTIC_DIR, copy_image, new_row
from segpipe.data.imageio import save_instance_map, save_label

BACKGROUND = 0
FAR_OUTSIDE = 4  # polygon coordinates beyond this many image sides are absurd: rasterising them would take forever


@dataclass(frozen=True)
class Annotation:
    """One object: its canonical class (None when the source's category is unknown) and COCO segmentation."""

    category: int | None
    segmentation: Any
    iscrowd: bool = False
    source_category: int | None = None
    problem: str = ""  # why a reader already knows it cannot be painted ("reason: detail")

    def scaled(self, width: int, height: int) -> Annotation:
        """Polygons given in 0..1 image coordinates (YOLO) in pixels of a ``width`` x ``height`` image."""
        if self.problem:
            return self
        polygons = [[v * (width if i % 2 == 0 else height) for i, v in enumerate(p)] for p in self.segmentation]
        return replace(self, segmentation=polygons)


def _problem(annotation: Annotation, height: int, width: int) -> str:
    """Why ``annotation`` cannot be rasterised ('' when it can); coordinates outside the image are clipped."""
    if annotation.problem:
        return annotation.problem
    if annotation.category is None:
        return f"unknown_category: category id {annotation.source_category} is not in the category list"
    segmentation = annotation.segmentation
    if isinstance(segmentation, list):
        if not all(isinstance(p, list) and all(_is_number(v) for v in p) for p in segmentation):
            return "bad_segmentation: a polygon is not a list of numbers"
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return "degenerate_polygon: no polygon with 3 or more points"
        values = np.abs(np.concatenate([np.asarray(p, dtype=np.float64) for p in polygons]))
        worst = float(np.nan_to_num(values, nan=np.inf).max())
        if worst > FAR_OUTSIDE * max(height, width):
            shown = next((float(v) for v in values if not np.isfinite(v)), worst)
            return f"bad_coordinates: a polygon coordinate is {shown:g}, not in or near the {width}x{height} image"
    elif not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
        return "bad_segmentation: neither polygons nor RLE"
    elif list(segmentation["size"]) != [height, width]:
        return f"bad_segmentation: RLE size {list(segmentation['size'])} is not the image's [{height}, {width}]"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _outside(segmentation: Any, height: int, width: int) -> bool:
    if not isinstance(segmentation, list):
        return False
    points = np.concatenate([np.asarray(p, dtype=np.float64) for p in segmentation if len(p) >= 6])
    xs, ys = points[0::2], points[1::2]
    return bool((xs < 0).any() or (ys < 0).any() or (xs > width).any() or (ys > height).any())


def rasterize(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A boolean HxW mask from COCO polygons, uncompressed RLE or compressed RLE (pycocotools)."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects([p for p in segmentation if len(p) >= 6], height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def table_entry(category: int | None, source_category: int | None = None, *, number: int = 0, iscrowd: bool = False,
                area: int = 0, pixels: int = 0, problem: str = "", clipped: bool = False) -> dict:
    """One row of a sample's instance table (``id`` 0 until the object is painted)."""
    return {"id": number, "category": category, "source_category": source_category, "iscrowd": iscrowd,
            "area": area, "pixels": pixels, "problem": problem, "clipped": clipped}


def _entry(annotation: Annotation, problem: str) -> dict:
    return table_entry(annotation.category, annotation.source_category, iscrowd=bool(annotation.iscrowd),
                       problem=problem)


def table_from_maps(semantic: np.ndarray, instance: np.ndarray, ignore_index: int | None = None) -> list[dict]:
    """The instance table of a source that gives maps, not objects: each id's class is the one most of its
    labelled pixels carry (an object without any is reported as an unknown category)."""
    table = []
    for number in np.unique(instance[instance > 0]):
        pixels = instance == number
        labelled = semantic[pixels & (semantic != ignore_index)] if ignore_index is not None else semantic[pixels]
        category = int(np.bincount(labelled.astype(np.int64)).argmax()) if labelled.size else None
        count = int(pixels.sum())
        table.append(table_entry(category, category, number=int(number), area=count, pixels=count,
                                 problem="" if category is not None else
                                 "unknown_category: the object has no class pixels"))
    return table


def paint(annotations: list[Annotation], height: int, width: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The class map, the instance map and the instance table of one image's annotations."""
    semantic = np.full((height, width), BACKGROUND, dtype=np.int64)
    instance = np.zeros((height, width), dtype=np.uint16)
    table: list[dict] = []
    masks: list[tuple[int, np.ndarray]] = []
    for annotation in annotations:
        entry = _entry(annotation, _problem(annotation, height, width))
        if not entry["problem"]:
            mask = rasterize(annotation.segmentation, height, width)
            entry["area"], entry["clipped"] = int(mask.sum()), _outside(annotation.segmentation, height, width)
            if not entry["area"]:
                entry["problem"] = "zero_area: the polygon covers no pixel"
            else:
                masks.append((len(table), mask))
        table.append(entry)
    for number, (index, mask) in enumerate(sorted(masks, key=lambda m: -m[1].sum()), start=1):
        instance[mask] = number
        semantic[mask] = table[index]["category"]
        table[index]["id"] = number
    ids = np.bincount(instance.ravel(), minlength=len(masks) + 1)
    for entry in table:
        entry["pixels"] = int(ids[entry["id"]]) if entry["id"] else 0
    return semantic, instance, table


@dataclass(frozen=True)
class AnnotatedSample:
    """An image with its object annotations; ``materialize`` writes it in the canonical layout.

    ``root`` is the source folder and ``image`` a path relative to it, so the manifest records the same text
    whichever way ``ingest.source`` spells the folder. With ``normalized`` the polygons are in 0..1 image
    coordinates (YOLO) and are scaled once the image's size is read.
    """

    sample_id: str
    root: Path
    image: str
    annotations: tuple[Annotation, ...]
    source_split: str
    size: tuple[int, int] | None = None  # (width, height) the annotations were made on, when the source says
    normalized: bool = False

    def materialize(self, out_dir: Path) -> dict:
        row = new_row(self.sample_id, self.source_split, self.image)
        source = self.root / self.image
        if not source.is_file():
            row["issue"] = f"missing_image: {self.image} is annotated but not there"
            row["instances"] = [_entry(a, "missing_image: the annotated image is not there") for a in self.annotations]
            return row
        if not copy_image(source, out_dir, row):
            return row
        width, height = row["width"], row["height"]
        if self.size and tuple(self.size) != (width, height):
            row["issue"] = (f"size_mismatch: {self.image} is {width}x{height} but its annotations are for "
                            f"{self.size[0]}x{self.size[1]} (width x height)")
            return row
        annotations = [a.scaled(width, height) for a in self.annotations] if self.normalized else self.annotations
        semantic, instance, table = paint(list(annotations), height, width)
        paths = {"semantic": out_dir / SEMANTIC_DIR / f"{self.sample_id}.png",
                 "instance": out_dir / INSTANCE_DIR / f"{self.sample_id}.png"}
        save_label(semantic, paths["semantic"])
        save_instance_map(instance, paths["instance"])
        row.update({key: str(path) for key, path in paths.items()})
        row["instances"] = table
        return row
