"""Loader throughput: the training-ready cache vs decoding the image files with PIL on every access.

Both loaders apply the same augmentation policy (segpipe.paths.AUGMENT_POLICY) with the same DataLoader
settings. Run it in a project where `dvc repro` has produced data/split and data/cache (the default dataset,
or CamVid after `segpipe preset camvid-cpu && dvc repro`).

    python -m bench.loader_throughput [--epochs 2] [--batch-size 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from segpipe.data.canonical import read_manifest
from segpipe.data.dataset import CachedSegmentation, DecodingSegmentation, data_loader
from segpipe.fsutil import write_json
from segpipe.paths import AUGMENT_POLICY, CACHE, SPLIT
from segpipe.transforms import build

RESULTS = Path(__file__).parent / "results" / "loader_throughput.json"


def samples_per_second(dataset: Dataset, epochs: int, batch_size: int, workers: int) -> float:
    """Iterate ``epochs`` shuffled epochs (after one warm-up batch) and return samples per second."""
    torch.manual_seed(0)
    loader = data_loader(dataset, workers, batch_size=batch_size, shuffle=True, persistent_workers=workers > 0)
    next(iter(loader))
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["image"])
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the train split per loader")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON figures")
    args = parser.parse_args(argv)

    policy = json.loads(AUGMENT_POLICY.read_text())
    transform = build(policy["sample"], policy["ignore_index"])
    cached = CachedSegmentation(CACHE / "train", transform)
    decoding = DecodingSegmentation(read_manifest(SPLIT / "train.parquet"), tuple(policy["size"]), transform)
    settings = (args.epochs, args.batch_size, args.workers)
    decode_rate = samples_per_second(decoding, *settings)
    cache_rate = samples_per_second(cached, *settings)
    figures = {
        "benchmark": "loader_throughput",
        "samples": len(cached),
        "image_size": policy["size"],
        "epochs": args.epochs, "batch_size": args.batch_size, "num_workers": args.workers,
        "pil_decode_samples_per_s": round(decode_rate, 2),
        "cache_samples_per_s": round(cache_rate, 2),
        "speedup_cache_over_pil": round(cache_rate / decode_rate, 2),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    write_json(args.out, figures)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
