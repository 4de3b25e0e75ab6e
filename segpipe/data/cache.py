"""The training-ready cache: every split decoded and resized once into uint8 arrays that load by memory map."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segpipe.data.imageio import load_image, load_label
from segpipe.errors import SegpipeError
from segpipe.parallel import parallel_map

IMAGE_FILE, SEMANTIC_FILE, INSTANCE_FILE, SAMPLES_FILE = "image.npy", "semantic.npy", "instance.npy", "samples.parquet"


def target_size(frame: pd.DataFrame, cache_size: tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) of the cached arrays: ``cache_size``, or the one size that every image shares."""
    if cache_size:
        return int(cache_size[0]), int(cache_size[1])
    sizes = frame.groupby(["height", "width"]).sample_id.first()
    if len(sizes) != 1:
        examples = ", ".join(f"{sid} {w}x{h}" for (h, w), sid in list(sizes.items())[:3])
        raise SegpipeError(
            f"the images differ in size ({examples}, width x height); set augment.cache_size: [height, width] "
            f"to resize them once"
        )
    (height, width), _ = next(iter(sizes.items()))
    return int(height), int(width)


def label_dtype(ignore_index: int) -> str:
    """The dtype of cached label maps: 8 bits, or 16 when the ignore index says the classes need them."""
    return "uint8" if ignore_index == 255 else "uint16"


def check_crop_fits(crop_size: tuple[int, int] | None, size: tuple[int, int], from_cache_size: bool) -> None:
    """Refuse a training crop larger than the cached images: it would upsample every sample it trains on."""
    if not crop_size or (crop_size[0] <= size[0] and crop_size[1] <= size[1]):
        return
    what = "augment.cache_size" if from_cache_size else "the size of every image"
    raise SegpipeError(
        f"augment.crop_size [{crop_size[0]}, {crop_size[1]}] is larger than the images the cache holds "
        f"({size[0]}x{size[1]} height x width, {what}); set crop_size to at most [{size[0]}, {size[1]}]"
    )


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 uint8 image to (height, width) with bilinear filtering (no-op when already that size)."""
    if pixels.shape[:2] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize(size[::-1], Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map to (height, width) with nearest neighbour (no-op when already that size)."""
    if labels.shape == size:
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size[::-1], Image.NEAREST))


def _fill_slot(job: tuple[int, dict], out_dir: Path, size: tuple[int, int]) -> None:
    index, row = job
    pixels = resize_image(load_image(row["image"]).pixels, size)
    images = np.load(out_dir / IMAGE_FILE, mmap_mode="r+")
    images[index] = pixels
    images.flush()
    if row["semantic"]:  # images without labels (pretraining's extra images) keep a label map of zeros
        semantic = np.load(out_dir / SEMANTIC_FILE, mmap_mode="r+")
        semantic[index] = resize_labels(load_label(row["semantic"]), size)
        semantic.flush()
    if row["instance"]:
        instance = np.load(out_dir / INSTANCE_FILE, mmap_mode="r+")
        instance[index] = resize_labels(load_label(row["instance"]), size)
        instance.flush()


def build_split_cache(frame: pd.DataFrame, out_dir: Path, size: tuple[int, int], label_dtype: np.dtype,
                      workers: int, split: str) -> None:
    """Decode and resize every sample of one split into ``out_dir`` (arrays, the sample list, instance tables)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n, (height, width) = len(frame), size
    np.lib.format.open_memmap(out_dir / IMAGE_FILE, "w+", np.uint8, (n, height, width, 3)).flush()
    np.lib.format.open_memmap(out_dir / SEMANTIC_FILE, "w+", label_dtype, (n, height, width)).flush()
    has_instances = n > 0 and bool((frame.instance != "").all())
    if has_instances:
        np.lib.format.open_memmap(out_dir / INSTANCE_FILE, "w+", np.uint16, (n, height, width)).flush()
    jobs = list(enumerate(frame.to_dict("records")))
    parallel_map(partial(_fill_slot, out_dir=out_dir, size=size), jobs, workers=workers, desc=f"cache {split}")
    columns = ["sample_id", "width", "height", "sha256"] + (["instances"] if has_instances else [])
    frame[columns].to_parquet(out_dir / SAMPLES_FILE, index=False)
