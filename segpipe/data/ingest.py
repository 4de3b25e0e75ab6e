"""Bring a source dataset into the canonical layout (:mod:`segpipe.data.canonical`), in parallel, atomically."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from segpipe.data import cityscapes, coco, coco_panoptic, mask_folder, synthetic, voc, yolo_seg
from segpipe.data.canonical import (
    CATEGORIES_FILE,
    IMAGES_DIR,
    INSTANCE_DIR,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    SEMANTIC_DIR,
    read_manifest,
    write_manifest,
)
from segpipe.data.imageio import set_pixel_limit
from segpipe.data.sample_ids import require_unique
from segpipe.data.sources import local_source
from segpipe.fsutil import atomic_dir
from segpipe.parallel import parallel_map
from segpipe.params import Params


def _materialize(sample, out_dir: Path, max_pixels: int | None) -> dict:
    set_pixel_limit(max_pixels)  # in this worker process: larger images and masks are refused from their header
    return sample.materialize(out_dir)


def _write(categories, samples, out_dir: Path, workers: int, max_pixels: int | None) -> pd.DataFrame:
    with atomic_dir(out_dir) as tmp:
        for sub in (IMAGES_DIR, SEMANTIC_DIR, INSTANCE_DIR):
            (tmp / sub).mkdir()
        rows = parallel_map(partial(_materialize, out_dir=tmp, max_pixels=max_pixels), samples, workers=workers,
                            desc="ingest")
        # the readers give distinct ids; should two rows share one all the same, one wrote over the other's files
        require_unique(((row["sample_id"], row["source"]) for row in rows), "the sample id",
                       "one would replace the other's files in data/raw")
        categories.save(tmp / CATEGORIES_FILE)
        write_manifest(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)), tmp / MANIFEST_FILE)
    return read_manifest(out_dir / MANIFEST_FILE)


def ingest(params: Params, out_dir: str | Path) -> pd.DataFrame:
    """Write the canonical dataset for ``params.ingest`` into ``out_dir``; return its manifest."""
    out_dir = Path(out_dir)
    cfg = params.ingest
    if cfg.format == "synthetic":
        categories, samples = synthetic.plan(cfg.synthetic, params.base.seed)
        return _write(categories, samples, out_dir, params.base.workers, params.clean.max_pixels)
    readers = {"mask_folder": (mask_folder.plan, cfg.mask_folder), "coco": (coco.plan, cfg.coco),
               "coco_panoptic": (coco_panoptic.plan, cfg.coco_panoptic),
               "cityscapes": (cityscapes.plan, cfg.cityscapes),
               "yolo_seg": (yolo_seg.plan, cfg.yolo_seg), "voc": (voc.plan, cfg.voc)}
    plan, options = readers[cfg.format]
    with local_source(cfg.source, cfg.sha256, cfg.download, cfg.limits) as root:
        categories, samples = plan(root, options)
        return _write(categories, samples, out_dir, params.base.workers, params.clean.max_pixels)
