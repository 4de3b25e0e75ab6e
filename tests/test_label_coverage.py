"""Classes that vanish or are mostly ignore are reported by clean and split, with the fix when it is known."""

import json
import subprocess
import sys

import numpy as np

from segpipe.params import parse_params
from tests.conftest import REPO, THREE_CLASSES, save_pair, scene, write_params

BINARY = [{"name": "background", "color": [0, 0, 0]}, {"name": "cell", "color": [255, 255, 255]}]


def _run(workdir, *stages: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": ""}
    for stage in stages:
        done = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env, capture_output=True,
                              text=True, check=True)
    return done


def _binary_masks(src, count: int = 8) -> None:
    """Microscopy-style masks: 0 background, 255 foreground."""
    for i in range(count):
        image, mask = scene(seed=i)
        save_pair(src, f"m{i}", image, np.where(mask == 2, 255, 0).astype(np.uint8))


def test_binary_0_255_masks_warn_and_name_the_label_map(workdir):
    _binary_masks(workdir / "src")
    ingest = {"format": "mask_folder", "source": str(workdir / "src"), "mask_folder": {"classes": BINARY}}
    write_params(workdir / "params.yaml", parse_params({"base": {"workers": 1}, "ingest": ingest}))
    _run(workdir, "ingest")
    done = _run(workdir, "clean")
    report = json.loads((workdir / "reports/clean.json").read_text())
    assert report["classes_without_pixels"] == ["cell"]
    assert "label_map: {255: 1}" in done.stderr and "segpipe clean: warning:" in done.stderr
    assert any("cell has no pixels" in w for w in report["warnings"])
    split = _run(workdir, "split")
    split_report = json.loads((workdir / "reports/split.json").read_text())
    assert split_report["classes_without_pixels"]["train"] == ["cell"]
    assert "segpipe split: warning: train: class cell has no pixels" in split.stderr


def test_binary_masks_with_the_suggested_label_map_warn_no_more(workdir):
    _binary_masks(workdir / "src")
    ingest = {"format": "mask_folder", "source": str(workdir / "src"),
              "mask_folder": {"classes": BINARY, "label_map": {255: 1}}}
    write_params(workdir / "params.yaml", parse_params({"base": {"workers": 1}, "ingest": ingest}))
    _run(workdir, "ingest")
    done = _run(workdir, "clean")
    report = json.loads((workdir / "reports/clean.json").read_text())
    assert report["classes_without_pixels"] == [] and report["warnings"] == [] and "warning" not in done.stderr


def test_a_mostly_ignore_dataset_is_reported(workdir):
    src = workdir / "src"
    for i in range(4):
        image, mask = scene(seed=i)
        mask[: 2 * mask.shape[0] // 3] = 255  # two thirds unlabelled
        save_pair(src, f"s{i}", image, mask)
    ingest = {"format": "mask_folder", "source": str(src), "mask_folder": {"classes": THREE_CLASSES}}
    write_params(workdir / "params.yaml", parse_params({"base": {"workers": 1}, "ingest": ingest}))
    _run(workdir, "ingest")
    done = _run(workdir, "clean")
    report = json.loads((workdir / "reports/clean.json").read_text())
    assert 0.6 < report["ignore_share"] < 0.7
    assert "of the mask pixels are ignore" in done.stderr


def test_a_class_in_train_but_not_in_val_or_test_is_reported(workdir):
    src = workdir / "src"
    for offset, (split, count) in enumerate((("train", 3), ("val", 2), ("test", 2))):
        for i in range(count):
            image, mask = scene(seed=10 * offset + i)
            if split != "train":
                mask[mask == 2] = 0  # the 'green' boxes only in train
            save_pair(src, f"{split}{i}", image, mask, f"{split}/images", f"{split}/masks")
    splits = {s: {"images": f"{s}/images", "masks": f"{s}/masks"} for s in ("train", "val", "test")}
    ingest = {"format": "mask_folder", "source": str(src), "mask_folder": {"classes": THREE_CLASSES, "splits": splits}}
    write_params(workdir / "params.yaml", parse_params({"base": {"workers": 1}, "ingest": ingest}))
    done = _run(workdir, "ingest", "clean", "split")
    report = json.loads((workdir / "reports/split.json").read_text())
    assert report["classes_without_pixels"] == {"train": [], "val": ["green"], "test": ["green"]}
    assert "val: class green is in train but not in val" in done.stderr
    assert "test: class green is in train but not in test" in done.stderr
    assert any("green is in train but not in val" in w for w in report["warnings"])
