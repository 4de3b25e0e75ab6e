"""CamVid from ../shared/data/camvid (path in SEGPIPE_CAMVID, which .ci/run sets)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from segpipe import presets
from segpipe.data.canonical import read_manifest
from segpipe.data.imageio import load_label
from segpipe.params import parse_params
from segpipe.paths import CLEAN, SPLIT
from stages import augment, clean, evaluate, export, ingest, split, train

pytestmark = [pytest.mark.camvid, pytest.mark.slow]


@pytest.fixture(scope="module")
def camvid_root() -> Path:
    value = os.environ.get("SEGPIPE_CAMVID")
    if not value:
        pytest.skip("SEGPIPE_CAMVID is not set (point it at ../shared/data/camvid to run the CamVid tests)")
    root = Path(value)
    if not (root / "trainannot").is_dir():
        pytest.fail(f"SEGPIPE_CAMVID={value} is set but holds no CamVid (trainannot/ missing)")
    return root


def camvid_params(root: Path, **sections):
    data = yaml.safe_load(presets.preset_text("camvid-cpu"))
    data["ingest"]["source"] = str(root)
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_params(data)


def test_camvid_end_to_end_smoke(camvid_root, workdir):
    """Ingest to export on the real data: the published split, then a few training steps, evaluation at 360x480."""
    params = camvid_params(camvid_root, train={"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 2},
                           augment={"crop_size": [128, 128], "preview_samples": 2},
                           export={"parity_images": 2, "latency_runs": 2})
    ingest.run(params)
    summary = clean.run(params).summary
    assert summary["checked"] == summary["kept"] == 701
    report = split.run(params)
    assert report["method"] == "predefined"
    assert report["sizes"] == {"train": 367, "val": 101, "test": 233}
    train_split = read_manifest(SPLIT / "train.parquet")
    assert (train_split.width == 480).all() and (train_split.height == 360).all()
    labels = np.unique(np.concatenate([np.unique(load_label(p)) for p in train_split.semantic[:40]]))
    assert set(labels) <= set(range(11)) | {255} and 255 in labels and 3 in labels
    pixels = np.array(read_manifest(CLEAN / "manifest.parquet").class_pixels.tolist()).sum(axis=0)
    assert len(pixels) == 11 and pixels.argmax() == 3  # Road is the largest class (about a third)

    augment.run(params)
    train.run(params)
    result = evaluate.run(params)
    assert result.metrics["images"] == 233
    test_split = read_manifest(SPLIT / "test.parquet")
    labelled = sum(int((load_label(p) != 255).sum()) for p in test_split.semantic)
    assert result.per_class.support_pixels.sum() == labelled  # every labelled pixel at the original resolution
    exported = export.run(params)
    assert exported["argmax_agreement"] >= 0.999
    assert json.loads(Path("export/model.json").read_text())["classes"][3]["name"] == "Road"
