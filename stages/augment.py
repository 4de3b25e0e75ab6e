"""The augment stage: write the training-ready cache, the augmentation policy as data, and a preview of it."""

from __future__ import annotations

import pandas as pd
import torch

from segpipe.data.cache import build_split_cache, check_crop_fits, label_dtype, target_size
from segpipe.data.canonical import CATEGORIES_FILE, Categories, read_manifest
from segpipe.data.dataset import CachedSegmentation
from segpipe.data.split import SPLITS
from segpipe.fsutil import atomic_dir, write_json
from segpipe.params import Params
from segpipe.paths import AUGMENT_POLICY, CACHE, REPORTS, SPLIT
from segpipe.stage import stage_main
from segpipe.transforms import build, device_spec, sample_spec
from segpipe.viz import preview_grid


def run(params: Params) -> dict:
    """Build data/cache/<split>/ arrays, data/cache/augment_policy.json and reports/augment_preview.png."""
    categories = Categories.load(SPLIT / CATEGORIES_FILE)
    parts = {name: read_manifest(SPLIT / f"{name}.parquet") for name in SPLITS}
    size = target_size(pd.concat(parts.values()), params.augment.cache_size)
    check_crop_fits(params.augment.crop_size, size, from_cache_size=params.augment.cache_size is not None)
    with_instances = bool((parts["train"].instance != "").all()) and any(c.isthing for c in categories.items)
    policy = {
        "sample": sample_spec(params.augment),
        "device_train": device_spec(params.augment, train=True),
        "device_eval": device_spec(params.augment, train=False),
        "size": list(size),
        "train_size": list(params.augment.crop_size or size),
        "ignore_index": categories.ignore_index,
        "normalize": params.augment.normalize.model_dump(),
        "min_instance_pixels": params.augment.min_instance_pixels,
    }
    with atomic_dir(CACHE) as tmp:
        for name, frame in parts.items():
            build_split_cache(frame, tmp / name, size, label_dtype(categories.ignore_index), params.base.workers, name)
        categories.save(tmp / CATEGORIES_FILE)
        write_json(tmp / AUGMENT_POLICY.name, policy)
    torch.manual_seed(params.base.seed)
    train = CachedSegmentation(
        CACHE / "train", build(policy["sample"], categories.ignore_index, with_instances,
                               params.augment.min_instance_pixels), with_instances)
    count = min(params.augment.preview_samples, len(train))
    picks = torch.randperm(len(train))[:count].tolist()
    preview_grid([train[i] for i in picks], categories, REPORTS / "augment_preview.png")
    print(f"augment: cached {', '.join(f'{k} {len(v)}' for k, v in parts.items())} at {size[0]}x{size[1]} "
          f"-> {CACHE}; preview in {REPORTS / 'augment_preview.png'}")
    return policy


def main() -> None:
    stage_main("augment", run)


if __name__ == "__main__":
    main()
