"""Reader for the PASCAL VOC 2012 segmentation layout: JPEGImages, SegmentationClass and SegmentationObject
palette PNGs (255 = the ignored border), ImageSets/Segmentation/{train,val}.txt as predefined splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segpipe.data.canonical import INSTANCE_DIR, SEMANTIC_DIR, Categories, Category, copy_image, new_row
from segpipe.data.imageio import DecodeError, load_label, save_instance_map, save_label
from segpipe.data.instances import table_from_maps
from segpipe.data.palette import class_color
from segpipe.errors import SegpipeError
from segpipe.params import VocParams

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
BORDER = 255
CATEGORIES = Categories(tuple(Category(i, name, class_color(i), i > 0, i) for i, name in enumerate(VOC_CLASSES)),
                        ignore_index=BORDER)


@dataclass(frozen=True)
class VocSample:
    """One VOC image with its class and object PNGs (paths relative to the VOC folder ``root``)."""

    sample_id: str
    root: Path
    source_split: str

    def materialize(self, out_dir: Path) -> dict:
        image = f"JPEGImages/{self.sample_id}.jpg"
        row = new_row(self.sample_id, self.source_split, image)
        if not (self.root / image).is_file():
            row["issue"] = f"missing_image: {image} is listed in ImageSets/Segmentation but not there"
            return row
        if not copy_image(self.root / image, out_dir, row):
            return row
        try:
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
        objects[objects == BORDER] = 0
        save_label(classes, semantic)
        save_instance_map(objects, instance)
        row.update({"semantic": str(semantic), "instance": str(instance),
                    "instances": table_from_maps(classes, objects, BORDER)})
        return row


def plan(root: Path, params: VocParams) -> tuple[Categories, list[VocSample]]:
    """Every sample listed in the chosen ImageSets/Segmentation files (each list is a predefined split)."""
    samples, listed = [], {}
    for split in params.image_sets:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise SegpipeError(f"{listing}: not found; point ingest.source at the VOC2012 folder (it holds "
                               f"JPEGImages/ and ImageSets/) or change ingest.voc.image_sets")
        for name in (line.strip() for line in listing.read_text().splitlines()):
            if name and name in listed:
                raise SegpipeError(f"{listing}: {name} is listed again (first in {listed[name]}); an image belongs "
                                   f"to one split only, once")
            if name:
                listed[name] = listing.name
                samples.append(VocSample(name, root, split))
    if not samples:
        raise SegpipeError(f"{root}: the ImageSets/Segmentation lists name no images")
    return CATEGORIES, samples
