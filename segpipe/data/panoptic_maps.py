"""A panoptic annotation (an id map plus what each id is) into the canonical class and instance maps, shared by
the COCO panoptic and Cityscapes readers: stuff segments paint ``semantic/``; thing segments (crowd regions
included, flagged in the instance table) paint both ``semantic/`` and ``instance/``; unlabelled pixels are ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segpipe.data.canonical import INSTANCE_DIR, SEMANTIC_DIR
from segpipe.data.imageio import save_instance_map, save_label
from segpipe.data.instances import table_entry


@dataclass(frozen=True)
class SegmentLabel:
    """What one id of the source's map is: its canonical class (None when unknown or not evaluated)."""

    id: int
    category: int | None
    isthing: bool
    iscrowd: bool = False
    source_category: int | None = None
    problem: str = ""  # why it is not painted (empty for ignored classes that are ignore by design)


def paint_segments(ids: np.ndarray, labels: list[SegmentLabel], ignore_index: int
                   ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The class map, the instance map (things numbered 1..n) and the instance table of one id map. Ids in the
    map that no label names are reported in the table and left as ignore."""
    present, dense = np.unique(ids, return_inverse=True)
    dense = dense.reshape(ids.shape)
    counts = np.bincount(dense.ravel(), minlength=len(present))
    position = {int(v): i for i, v in enumerate(present)}
    semantic_of = np.full(len(present), ignore_index, np.int64)
    instance_of = np.zeros(len(present), np.int64)
    table: list[dict] = []
    number = 0
    for label in labels:
        where = position.get(label.id)
        area = int(counts[where]) if where is not None else 0
        if label.category is None:
            if label.problem:
                table.append(table_entry(None, label.source_category, iscrowd=label.iscrowd, area=area,
                                         problem=label.problem))
            continue
        if where is None:
            continue
        semantic_of[where] = label.category
        if label.isthing:
            number += 1
            instance_of[where] = number
            table.append(table_entry(label.category, label.source_category, number=number, iscrowd=label.iscrowd,
                                     area=area, pixels=area))
    named = {label.id for label in labels}
    for value in present:
        if int(value) and int(value) not in named:
            table.append(table_entry(None, None, area=int(counts[position[int(value)]]),
                                     problem=f"unlisted_segment: segment id {int(value)} is in the map but not in "
                                             f"the annotations; its pixels are ignored"))
    return semantic_of[dense], instance_of[dense], table


def write_maps(semantic: np.ndarray, instance: np.ndarray, out_dir: Path, sample_id: str) -> dict[str, str]:
    """Save the canonical class and instance maps of a sample; their paths for the manifest row."""
    paths = {"semantic": out_dir / SEMANTIC_DIR / f"{sample_id}.png",
             "instance": out_dir / INSTANCE_DIR / f"{sample_id}.png"}
    save_label(semantic, paths["semantic"])
    save_instance_map(instance, paths["instance"])
    return {key: str(path) for key, path in paths.items()}
