"""The pruning experiment: one CamVid search run twice in one project, with no pruner and with hyperband, the same
seeded random trials in the same order (two studies), measured in one session: trial-epochs run, wall time, the
best validation objective found and that trial's test mIoU.

    python -m bench.sweep_pruning            # about 100 min on 2 cores; writes bench/results/sweep_pruning.json
    python -m bench.sweep_pruning --smoke    # the same on the tiny synthetic project, a few minutes

The search (the ``SEARCH`` settings below): the camvid-cpu recipe on CamVid at half resolution (240x180, images
resized with Lanczos, labels with nearest neighbour, the official train/val/test lists), 128 px crops (the same
share of the image as the recipe's 256 px at full size), half an epoch of the train split per epoch and 8 epochs,
16 random trials over the learning rate (log 1e-4 .. 1e-1) and the schedule. Every trial also runs evaluate and
export, as any trial does; at full resolution those alone would take more than an hour per sweep.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from segpipe.fsutil import write_json
from segpipe.params import Params, parse_params
from segpipe.presets import full_params_text
from tests.conftest import new_project, tiny_train_params

RESULTS = Path(__file__).parent / "results" / "sweep_pruning.json"
SEARCH = {"method": "random", "trials": 16, "concurrency": 1,
          "space": {"train.optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True},
                    "train.schedule.name": ["poly", "cosine"]},
          "pruning": {"min_epochs": 1, "reduction_factor": 3}}


HALF = (240, 180)  # width, height


def half_resolution_camvid(source: Path, target: Path) -> Path:
    """A copy of the CamVid folder ``source`` at :data:`HALF` size, same file names and folders."""
    for image in sorted(source.glob("*/*.png")):  # the split folders (not palette.png)
        copy = target / image.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(image) as picture:
            labels = image.parent.name.endswith("annot")
            picture.resize(HALF, Image.Resampling.NEAREST if labels else Image.Resampling.LANCZOS).save(copy)
    return target


def camvid_params(source: Path) -> Params:
    """camvid-cpu on half-resolution CamVid, sized so that one sweep of SEARCH takes about an hour on 2 cores."""
    data = yaml.safe_load(full_params_text("camvid-cpu"))
    data["ingest"]["source"] = str(source)
    data["augment"]["crop_size"] = [128, 128]
    data["train"].update(epochs=8, samples_per_epoch=184)
    data["orchestration"]["sweep"] = {**data["orchestration"]["sweep"], **SEARCH}
    return parse_params(data, "bench.sweep_pruning")


def smoke_params() -> Params:
    data = tiny_train_params(train={"epochs": 4, "batch_size": 4, "loader_workers": 0}).model_dump(mode="json")
    data["orchestration"]["sweep"] = {**data["orchestration"]["sweep"], **SEARCH, "trials": 4}
    return parse_params(data, "bench.sweep_pruning --smoke")


def one_sweep(project: Path, pruner: str) -> dict[str, Any]:
    from flows.sweep import segmentation_sweep

    started = time.monotonic()
    result = segmentation_sweep(project=str(project), pruner=pruner, study=f"bench-{pruner}")
    best = result["trials"][0]
    return {"pruner": pruner, "wall_s": round(time.monotonic() - started, 1), **result["compute"],
            "best_trial": best["name"], "best_overrides": best["overrides"],
            "best_val_miou": best["metrics"]["val_miou"], "best_test_miou": best["metrics"].get("test_miou"),
            "trials": [{"overrides": t["overrides"], "state": t["state"], "epochs_run": t["metrics"].get("epochs_run"),
                        "val_miou": t["metrics"].get("val_miou")} for t in result["trials"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the tiny synthetic project instead of CamVid")
    args = parser.parse_args()
    camvid = Path(os.environ.get("SEGPIPE_CAMVID", Path(__file__).parents[2] / "shared/data/camvid"))
    with tempfile.TemporaryDirectory() as folder:
        if not args.smoke and not camvid.is_dir():
            raise SystemExit(f"{camvid}: CamVid not found; set SEGPIPE_CAMVID to its folder")
        params = smoke_params() if args.smoke else camvid_params(
            half_resolution_camvid(camvid, Path(folder) / "camvid"))
        project = new_project(Path(folder) / "project", params, commit=True)
        unpruned, pruned = one_sweep(project, "none"), one_sweep(project, "hyperband")
    figures = {
        "what": "the same seeded random search twice in one project (shared stages restored from DVC's run cache): "
                "no pruner, then hyperband; trial-epochs, wall seconds, best val mIoU and that trial's test mIoU",
        "data": "synthetic (smoke)" if args.smoke else "CamVid at 240x180 (official splits), camvid-cpu at 128 px "
                                                         "crops, 184 samples per epoch",
        "search": SEARCH, "epochs": params.train.epochs, "none": unpruned, "hyperband": pruned,
        "trial_epochs_share": round(pruned["trial_epochs"] / unpruned["trial_epochs"], 3),
        "best_val_gap_points": round(100 * (unpruned["best_val_miou"] - pruned["best_val_miou"]), 2),
        "goal": "hyperband at most 60 % of the trial-epochs, best val mIoU within 0.5 points",
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    }
    if not args.smoke:
        write_json(RESULTS, figures)
    print(figures)


if __name__ == "__main__":
    main()
