"""CamVid from ../shared/data/camvid (path in SEGPIPE_CAMVID, which .ci/run sets)."""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from segpipe import presets
from segpipe.config import parse_params
from segpipe.data.canonical import read_manifest
from segpipe.data.imageio import load_label
from segpipe.paths import CLEAN, SPLIT
from stages import clean, ingest, split

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
    data.update(sections)
    return parse_params(data)


def test_camvid_ingest_clean_split_gives_the_published_split(camvid_root, workdir):
    params = camvid_params(camvid_root)
    ingest.run(params)
    summary = clean.run(params).summary
    assert summary["checked"] == summary["kept"] == 701
    report = split.run(params)
    assert report["method"] == "predefined"
    assert report["sizes"] == {"train": 367, "val": 101, "test": 233}
    train = read_manifest(SPLIT / "train.parquet")
    assert (train.width == 480).all() and (train.height == 360).all()
    labels = np.unique(np.concatenate([np.unique(load_label(p)) for p in train.semantic[:40]]))
    assert set(labels) <= set(range(11)) | {255} and 255 in labels and 3 in labels
    pixels = np.array(read_manifest(CLEAN / "manifest.parquet").class_pixels.tolist()).sum(axis=0)
    assert len(pixels) == 11 and pixels.argmax() == 3  # Road is the largest class (about a third)
