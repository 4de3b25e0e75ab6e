"""Reader for Cityscapes: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<name>_gtFine_labelIds.png`` and ``..._instanceIds.png``; the train/val/test folders are
predefined splits.

The official label table maps the 34 label ids to the 19 evaluated classes (train ids); every other label is
ignore. In ``instanceIds`` a thing pixel holds ``label id * 1000 + k`` for instance k, or just its label id when
it belongs to a group of objects (e.g. a crowd of people): such groups become crowd instances, as in
Cityscapes' own panoptic conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segpipe.data.canonical import Categories, Category, copy_image, new_row
from segpipe.data.imageio import DecodeError, load_label
from segpipe.data.panoptic_maps import SegmentLabel, paint_segments, write_maps
from segpipe.errors import SegpipeError
from segpipe.params import CityscapesParams

IGNORE = 255
INSTANCE_DIVISOR = 1000
# (label id, name, colour, isthing) of the 19 evaluated classes, in train-id order
EVALUATED = (
    (7, "road", (128, 64, 128), False), (8, "sidewalk", (244, 35, 232), False),
    (11, "building", (70, 70, 70), False), (12, "wall", (102, 102, 156), False),
    (13, "fence", (190, 153, 153), False), (17, "pole", (153, 153, 153), False),
    (19, "traffic light", (250, 170, 30), False), (20, "traffic sign", (220, 220, 0), False),
    (21, "vegetation", (107, 142, 35), False), (22, "terrain", (152, 251, 152), False),
    (23, "sky", (70, 130, 180), False), (24, "person", (220, 20, 60), True), (25, "rider", (255, 0, 0), True),
    (26, "car", (0, 0, 142), True), (27, "truck", (0, 0, 70), True), (28, "bus", (0, 60, 100), True),
    (31, "train", (0, 80, 100), True), (32, "motorcycle", (0, 0, 230), True), (33, "bicycle", (119, 11, 32), True),
)
CATEGORIES = Categories(tuple(Category(train_id, name, color, isthing, label_id)
                              for train_id, (label_id, name, color, isthing) in enumerate(EVALUATED)), IGNORE)
TRAIN_ID = {label_id: train_id for train_id, (label_id, *_rest) in enumerate(EVALUATED)}
LABEL_IDS = 34  # label ids 0..33; the rest (e.g. -1, license plate) are ignore


def _segment_labels(labels: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, list[SegmentLabel]]:
    """One id per (label, instance) pair: instanceIds where it marks an instance, else the label id."""
    ids = np.where(instances >= INSTANCE_DIVISOR, instances, labels).astype(np.int64)
    found = []
    for value in np.unique(ids):
        label_id = int(value) // INSTANCE_DIVISOR if value >= INSTANCE_DIVISOR else int(value)
        train_id = TRAIN_ID.get(label_id)
        if train_id is None:
            found.append(SegmentLabel(int(value), None, False))  # not evaluated: ignore by design
            continue
        isthing = CATEGORIES.items[train_id].isthing
        found.append(SegmentLabel(int(value), train_id, isthing, isthing and value < INSTANCE_DIVISOR, label_id))
    return ids, found


@dataclass(frozen=True)
class CityscapesSample:
    sample_id: str
    root: Path
    split: str
    city: str
    name: str

    def materialize(self, out_dir: Path) -> dict:
        image = f"leftImg8bit/{self.split}/{self.city}/{self.name}_leftImg8bit.png"
        ground_truth = f"gtFine/{self.split}/{self.city}/{self.name}_gtFine"
        row = new_row(self.sample_id, self.split, image)
        if not copy_image(self.root / image, out_dir, row):
            return row
        try:
            labels = load_label(self.root / f"{ground_truth}_labelIds.png").astype(np.int64)
            instances = load_label(self.root / f"{ground_truth}_instanceIds.png").astype(np.int64)
        except DecodeError as exc:
            reason = "missing_mask" if "not found" in str(exc) else "corrupt_mask"
            row["issue"] = f"{reason}: {str(exc).replace(str(self.root) + '/', '')}"
            return row
        for what, array in (("labelIds", labels), ("instanceIds", instances)):
            if array.shape != (row["height"], row["width"]):
                row["issue"] = (f"size_mismatch: {ground_truth}_{what}.png is {array.shape[1]}x{array.shape[0]}, "
                                f"the image {row['width']}x{row['height']} (width x height)")
                return row
        ids, segment_labels = _segment_labels(labels, instances)
        semantic, instance, table = paint_segments(ids, segment_labels, IGNORE)
        row.update(write_maps(semantic, instance, out_dir, self.sample_id))
        row["instances"] = table
        return row


def plan(root: Path, params: CityscapesParams) -> tuple[Categories, list[CityscapesSample]]:
    """Every image of the chosen split folders that exist (at least one must)."""
    samples = []
    for split in params.splits:
        folder = root / "leftImg8bit" / split
        for path in sorted(folder.glob("*/*_leftImg8bit.png")) if folder.is_dir() else []:
            name = path.name.removesuffix("_leftImg8bit.png")
            samples.append(CityscapesSample(f"{split}_{name}", root, split, path.parent.name, name))
    if not samples:
        raise SegpipeError(f"{root}: no leftImg8bit/<{'|'.join(params.splits)}>/<city>/*_leftImg8bit.png found; point "
                           f"ingest.source at the Cityscapes folder (it holds leftImg8bit/ and gtFine/)")
    return CATEGORIES, samples
