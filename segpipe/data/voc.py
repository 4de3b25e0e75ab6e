"""Reader for the PASCAL VOC 2012 segmentation layout: JPEGImages, SegmentationClass and SegmentationObject
palette PNGs (255 = the ignored border), ImageSets/Segmentation/{train,val}.txt as predefined splits."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segpipe.config import VocParams
from segpipe.data.canonical import IMAGES_DIR, INSTANCE_DIR, SEMANTIC_DIR, Categories, Category
from segpipe.data.imageio import DecodeError, load_label, oriented_size, save_label, sha256_file
from segpipe.data.palette import class_color
from segpipe.errors import SegpipeError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
BORDER = 255
CATEGORIES = Categories(tuple(Category(i, name, class_color(i), i > 0, i) for i, name in enumerate(VOC_CLASSES)),
                        ignore_index=BORDER)


def instance_table(classes: np.ndarray, objects: np.ndarray) -> list[dict]:
    """Each object's id and class: the class most of its pixels carry in SegmentationClass."""
    table = []
    for number in np.unique(objects[(objects > 0) & (objects != BORDER)]):
        pixels = objects == number
        labelled = classes[pixels & (classes != BORDER)]
        category = int(np.bincount(labelled).argmax()) if labelled.size else None
        count = int(pixels.sum())
        table.append({"id": int(number), "category": category, "source_category": category, "iscrowd": False,
                      "area": count, "pixels": count, "clipped": False,
                      "problem": "" if category else "unknown_category: the object has no class pixels"})
    return table


@dataclass(frozen=True)
class VocSample:
    """One VOC image with its class and object PNGs (paths relative to the VOC folder ``root``)."""

    sample_id: str
    root: Path
    source_split: str

    def materialize(self, out_dir: Path) -> dict:
        image = f"JPEGImages/{self.sample_id}.jpg"
        row = {"sample_id": self.sample_id, "image": "", "semantic": "", "instance": "", "width": 0, "height": 0,
               "sha256": "", "source_split": self.source_split, "issue": "", "source": image, "source_values": [],
               "instances": []}
        if not (self.root / image).is_file():
            row["issue"] = f"missing_image: {image} is listed in ImageSets/Segmentation but not there"
            return row
        target = out_dir / IMAGES_DIR / f"{self.sample_id}.jpg"
        shutil.copyfile(self.root / image, target)
        row["image"], row["sha256"] = str(target), sha256_file(target)
        try:
            row["width"], row["height"] = oriented_size(target)
            classes = load_label(self.root / f"SegmentationClass/{self.sample_id}.png").astype(np.int64)
            objects = load_label(self.root / f"SegmentationObject/{self.sample_id}.png").astype(np.int64)
        except DecodeError as exc:
            row["issue"] = f"corrupt_mask: {str(exc).replace(str(self.root) + '/', '')}"
            return row
        if classes.shape != objects.shape:
            row["issue"] = (f"size_mismatch: SegmentationObject/{self.sample_id}.png is {objects.shape[1]}x"
                            f"{objects.shape[0]}, SegmentationClass is {classes.shape[1]}x{classes.shape[0]}")
            return row
        semantic = out_dir / SEMANTIC_DIR / f"{self.sample_id}.png"
        instance = out_dir / INSTANCE_DIR / f"{self.sample_id}.png"
        save_label(classes, semantic)
        Image.fromarray(np.where(objects == BORDER, 0, objects).astype(np.uint16)).save(instance)
        row.update({"semantic": str(semantic), "instance": str(instance),
                    "instances": instance_table(classes, objects)})
        return row


def plan(root: Path, params: VocParams) -> tuple[Categories, list[VocSample]]:
    """Every sample listed in the chosen ImageSets/Segmentation files (each list is a predefined split)."""
    samples = []
    for split in params.image_sets:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise SegpipeError(f"{listing}: not found; point ingest.source at the VOC2012 folder (it holds "
                               f"JPEGImages/ and ImageSets/) or change ingest.voc.image_sets")
        samples += [VocSample(line.strip(), root, split) for line in listing.read_text().splitlines() if line.strip()]
    if not samples:
        raise SegpipeError(f"{root}: the ImageSets/Segmentation lists name no images")
    return CATEGORIES, samples
