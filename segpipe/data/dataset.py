"""Torch datasets that yield sample dicts of tv_tensors (image, semantic mask, instance masks and boxes), and the
loader over them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from segpipe.data.cache import IMAGE_FILE, INSTANCE_FILE, SAMPLES_FILE, SEMANTIC_FILE, resize_image, resize_labels
from segpipe.data.imageio import load_image, load_label
from segpipe.errors import SegpipeError
from segpipe.parallel import worker_context
from segpipe.transforms import SemanticMask

Transform = Callable[[dict], dict]


WORKER_TIMEOUT_S = 600  # a worker that sends no batch for this long is hung (a batch takes seconds at most)


class WatchedLoader(DataLoader):
    """A DataLoader whose hung worker is an error naming what it was reading, not a wait without end."""

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as exc:
                if "timed out" not in str(exc):
                    raise
                raise SegpipeError(f"a DataLoader worker reading {describe(self.dataset)} sent no batch for "
                                   f"{self.timeout:.0f} s and was given up as hung; run again (train.loader_workers: "
                                   f"0 loads in the main process)") from None
            yield batch


def describe(dataset: Dataset) -> str:
    """What a dataset reads, for messages: its folder, or what it wraps."""
    inner = getattr(dataset, "dataset", None) or (getattr(dataset, "datasets", None) or [None])[0]
    if getattr(dataset, "split_dir", None):
        return str(dataset.split_dir)
    return describe(inner) if inner is not None else type(dataset).__name__


def data_loader(dataset: Dataset, workers: int, **options: Any) -> DataLoader:
    """A DataLoader over ``dataset`` whose ``workers`` processes (0: none, load here) start from the fork server and
    are given up as hung after :data:`WORKER_TIMEOUT_S` without a batch."""
    context = worker_context() if workers else None
    timeout = WORKER_TIMEOUT_S if workers else 0
    return WatchedLoader(dataset, num_workers=workers, multiprocessing_context=context, timeout=timeout, **options)


def make_sample(image: np.ndarray, semantic: np.ndarray, instance: np.ndarray | None,
                table: list[dict] | None = None) -> dict:
    """Wrap HxWx3 / HxW arrays as tv_tensors; instances become binary masks, boxes, class labels and crowd flags.

    The image stays uint8 and an 8-bit label map stays uint8 (16-bit maps become int32): the device part of the
    policy converts batches to float, and the loss takes ``semantic.long()``. An instance's class and crowd flag
    come from the sample's instance table; without one, the class is the one most of its pixels carry.
    """
    labels = semantic if semantic.dtype == np.uint8 else semantic.astype(np.int32)
    sample = {
        "image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
        "semantic": SemanticMask(torch.from_numpy(labels)),
    }
    if instance is not None:
        ids = np.unique(instance)
        ids = ids[ids > 0]
        masks = torch.from_numpy(instance[None] == ids[:, None, None]) if len(ids) else torch.zeros(
            (0, *instance.shape), dtype=torch.bool)
        known = {int(e["id"]): e for e in table or [] if e["id"] and e["category"] is not None}
        classes = [int(known[i]["category"]) if i in known else
                   int(np.bincount(semantic[instance == i].astype(np.int64)).argmax()) for i in ids]
        sample["masks"] = tv_tensors.Mask(masks.to(torch.uint8))
        sample["boxes"] = tv_tensors.BoundingBoxes(
            masks_to_boxes(masks) if len(ids) else torch.zeros((0, 4)), format="XYXY", canvas_size=instance.shape)
        sample["labels"] = torch.tensor(classes, dtype=torch.int64)
        sample["iscrowd"] = torch.tensor([bool(known[i]["iscrowd"]) if i in known else False for i in ids],
                                         dtype=torch.bool)
    return sample


class CachedSegmentation(Dataset):
    """Reads one split of the training-ready cache by memory map; no image decoding at load time."""

    def __init__(self, split_dir: str | Path, transform: Transform | None = None, instances: bool = False) -> None:
        self.split_dir = Path(split_dir)
        self.transform = transform
        self.instances = instances and (self.split_dir / INSTANCE_FILE).exists()
        samples = pd.read_parquet(self.split_dir / SAMPLES_FILE)
        self.sample_ids = samples.sample_id.tolist()
        self.tables = samples.instances.tolist() if self.instances and "instances" in samples else None
        self._arrays: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to a worker process without the open memory maps (pickled, they would be copied whole)."""
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:  # opened lazily so that every DataLoader worker maps the files itself
            files = [IMAGE_FILE, SEMANTIC_FILE] + ([INSTANCE_FILE] if self.instances else [])
            self._arrays = tuple(np.load(self.split_dir / f, mmap_mode="r") for f in files)
        return self._arrays

    def __getitem__(self, index: int) -> dict:
        arrays = self._open()
        instance = np.array(arrays[2][index]) if self.instances else None
        table = list(self.tables[index]) if self.tables is not None else None
        sample = make_sample(np.array(arrays[0][index]), np.array(arrays[1][index]), instance, table)
        return self.transform(sample) if self.transform else sample


class DecodingSegmentation(Dataset):
    """Samples decoded from the image files on every access: evaluation at the original resolution
    (``size=None``) and the baseline that the cache is measured against."""

    def __init__(self, manifest: pd.DataFrame, size: tuple[int, int] | None = None,
                 transform: Transform | None = None, instances: bool = False) -> None:
        self.rows = manifest.to_dict("records")
        self.size = size
        self.transform = transform
        self.instances = instances

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        pixels, semantic = load_image(row["image"]).pixels, load_label(row["semantic"])
        if self.size:
            pixels, semantic = resize_image(pixels, self.size), resize_labels(semantic, self.size)
        instance, table = None, None
        if self.instances:
            instance, table = load_label(row["instance"]), list(row["instances"])
            if self.size:
                instance = resize_labels(instance, self.size)
        sample = make_sample(pixels, semantic, instance, table)
        return self.transform(sample) if self.transform else sample
