"""PQ throughput on Cityscapes-sized (1024x2048) pairs of segment-id maps: segpipe's evaluation (one bincount over
the densely renumbered pair of maps) against the approach of the official panopticapi (``np.unique`` over
``gt * 256^3 + pred``, then a loop over the pairs), measured in the same run on the same pairs.

    python -m bench.pq_throughput [--images 8] [--segments 120]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from segpipe.fsutil import write_json
from segpipe.panoptic_quality import PQStat, Segment, image_stat

RESULTS = Path(__file__).parent / "results" / "pq_throughput.json"
HEIGHT, WIDTH = 1024, 2048
OFFSET = 256**3
CATEGORIES = list(range(1, 20))  # 19 classes, the first 8 things (as in Cityscapes)


def random_pair(rng: np.random.Generator, segments: int) -> tuple[np.ndarray, list[Segment], np.ndarray,
                                                                   list[Segment]]:
    """A ground truth of random boxes with random 24-bit ids, and a prediction that shifts and relabels some."""
    gt = np.zeros((HEIGHT, WIDTH), np.int64)
    listed = []
    for _ in range(segments):
        y, x = rng.integers(0, HEIGHT - 64), rng.integers(0, WIDTH - 64)
        h, w = rng.integers(16, 256), rng.integers(16, 512)
        segment_id = int(rng.integers(1, OFFSET))
        gt[y:y + h, x:x + w] = segment_id
        listed.append(Segment(segment_id, int(rng.choice(CATEGORIES))))
    present = set(np.unique(gt).tolist())
    gt_segments = [s for s in listed if s.id in present]
    pred = np.roll(gt, (int(rng.integers(-6, 6)), int(rng.integers(-6, 6))), (0, 1))
    pred_segments = [Segment(s.id, s.category if rng.random() > 0.1 else int(rng.choice(CATEGORIES)))
                     for s in gt_segments if s.id in set(np.unique(pred).tolist())]
    return gt, gt_segments, pred, pred_segments


def unique_pairs_stat(gt: np.ndarray, gt_segments: list[Segment], pred: np.ndarray, pred_segments: list[Segment],
                      stat: PQStat) -> None:
    """True positives as panopticapi finds them: sort the pixel pairs with np.unique, then loop over the pairs."""
    gt_info = {s.id: s for s in gt_segments}
    pred_info = {s.id: s for s in pred_segments}
    pred_area = dict(zip(*np.unique(pred, return_counts=True), strict=True))
    gt_area = dict(zip(*np.unique(gt, return_counts=True), strict=True))
    labels, counts = np.unique(gt.astype(np.uint64) * OFFSET + pred.astype(np.uint64), return_counts=True)
    pairs = {(int(label) // OFFSET, int(label) % OFFSET): int(count) for label, count in zip(labels, counts,
                                                                                             strict=True)}
    for (gt_id, pred_id), inter in pairs.items():
        if gt_id in gt_info and pred_id in pred_info and gt_info[gt_id].category == pred_info[pred_id].category:
            union = pred_area[pred_id] + gt_area[gt_id] - inter - pairs.get((0, pred_id), 0)
            if inter / union > 0.5:
                stat.tp[stat.index[gt_info[gt_id].category]] += 1


def images_per_second(fn, pairs, repeats: int) -> tuple[float, PQStat]:
    stat = PQStat(CATEGORIES)
    fn(*pairs[0], PQStat(CATEGORIES))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for pair in pairs:
            fn(*pair, stat)
    return repeats * len(pairs) / (time.perf_counter() - start), stat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--segments", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pairs = [random_pair(rng, args.segments) for _ in range(args.images)]
    ours, stat = images_per_second(image_stat, pairs, args.repeats)
    reference, check = images_per_second(unique_pairs_stat, pairs, args.repeats)
    assert (stat.tp == check.tp).all(), "the two ways found different true positives"
    result = {"bench": "pq_throughput", "size": [HEIGHT, WIDTH], "images": args.images, "segments": args.segments,
              "segpipe_images_per_s": ours, "unique_pairs_images_per_s": reference, "speedup": ours / reference,
              "true_positives": int(stat.tp.sum()), "cpu_count": os.cpu_count(), "machine": platform.machine()}
    write_json(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
