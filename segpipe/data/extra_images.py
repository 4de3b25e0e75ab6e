"""Unlabelled images for pretraining (``pretrain.extra_images``): found in a folder, checked, and cached the way
the augment stage caches a split, so pretraining reads them like the train images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segpipe.data.cache import build_split_cache
from segpipe.data.imageio import DecodeError, load_image
from segpipe.data.mask_folder import IMAGE_SUFFIXES
from segpipe.errors import SegpipeError
from segpipe.parallel import parallel_map

REJECT_COLUMNS = ["file", "reason", "fix"]


def _readable(path: Path) -> str:
    """Why ``path`` cannot be used ('' when it decodes)."""
    try:
        load_image(path)
    except DecodeError as exc:
        return str(exc)
    return ""


def cache_extra_images(folder: str | Path, out_dir: Path, size: tuple[int, int], label_dtype: str,
                       workers: int) -> pd.DataFrame:
    """Cache every readable image under ``folder`` (recursively) into ``out_dir`` at ``size``; return the rows
    of the files left out, each with why and the fix."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise SegpipeError(f"pretrain.extra_images: {root} is not a folder; give a folder of images or null")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SegpipeError(f"pretrain.extra_images: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    problems = parallel_map(_readable, files, workers=workers, desc="check extra images")
    rejects = pd.DataFrame([[str(f), problem, "re-export the image or remove it from the folder"]
                            for f, problem in zip(files, problems, strict=True) if problem], columns=REJECT_COLUMNS)
    good = [str(f) for f, problem in zip(files, problems, strict=True) if not problem]
    frame = pd.DataFrame({"sample_id": [f"extra_{i:06d}" for i in range(len(good))], "image": good,
                          "semantic": "", "instance": "", "width": 0, "height": 0, "sha256": ""})
    build_split_cache(frame, out_dir, size, label_dtype, workers, "extra")
    return rejects
