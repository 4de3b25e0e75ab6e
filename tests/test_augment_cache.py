import json
import pickle

import numpy as np
import pytest
import torch

from segpipe.data.cache import target_size
from segpipe.data.canonical import read_manifest
from segpipe.data.dataset import CachedSegmentation, DecodingSegmentation, data_loader
from segpipe.data.imageio import load_image, load_label
from segpipe.errors import SegpipeError
from segpipe.paths import CACHE, REPORTS, SPLIT
from segpipe.transforms import build
from stages import augment, clean, ingest, split
from tests.conftest import tiny_params


def run_data_stages(params) -> dict:
    for stage in (ingest, clean, split):
        stage.run(params)
    return augment.run(params)


def test_cache_holds_the_decoded_samples_and_loads_with_workers(workdir):
    params = tiny_params()
    policy = run_data_stages(params)
    assert (REPORTS / "augment_preview.png").stat().st_size > 1000
    saved = json.loads((CACHE / "augment_policy.json").read_text())
    assert saved == json.loads(json.dumps(policy))
    train = read_manifest(SPLIT / "train.parquet")
    cached = CachedSegmentation(CACHE / "train", instances=True)
    assert cached.sample_ids == train.sample_id.tolist()
    for i in (0, len(train) - 1):
        sample = cached[i]
        assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), load_image(train.image[i]).pixels)
        assert np.array_equal(sample["semantic"].numpy(), load_label(train.semantic[i]))
        assert len(sample["masks"]) == len(np.unique(load_label(train.instance[i]))) - 1
        table = {e["id"]: e["category"] for e in train.instances[i]}  # the cache holds the instance tables
        assert sample["labels"].tolist() == [table[j] for j in sorted(table)]
    assert len(pickle.dumps(cached)) < 20_000  # a worker gets the paths, not the open memory maps copied whole
    dataset = CachedSegmentation(CACHE / "train", build(saved["sample"], 255), instances=False)
    loader = data_loader(dataset, 2, batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == torch.uint8
    assert batch["semantic"].shape == (4, 48, 48)
    images = build(saved["device_train"], 255)(batch["image"])
    assert images.dtype == torch.float32 and images.shape == (4, 3, 48, 48)


def test_decoding_dataset_matches_cache(workdir):
    params = tiny_params()
    policy = run_data_stages(params)
    frame = read_manifest(SPLIT / "val.parquet")
    decoding = DecodingSegmentation(frame, tuple(policy["size"]))
    cached = CachedSegmentation(CACHE / "val")
    assert len(decoding) == len(cached)
    assert torch.equal(decoding[0]["image"], cached[0]["image"])
    assert torch.equal(decoding[0]["semantic"], cached[0]["semantic"])


def test_cache_size_resizes_and_mixed_sizes_need_it(workdir):
    params = tiny_params(augment={"cache_size": [32, 40], "crop_size": None, "preview_samples": 2})
    run_data_stages(params)
    images = np.load(CACHE / "test" / "image.npy", mmap_mode="r")
    semantic = np.load(CACHE / "test" / "semantic.npy", mmap_mode="r")
    assert images.shape[1:] == (32, 40, 3) and semantic.shape[1:] == (32, 40)
    assert set(np.unique(semantic)) <= set(range(6))
    frame = read_manifest(SPLIT / "train.parquet")
    frame.loc[0, "width"] = 99
    with pytest.raises(SegpipeError, match="set augment.cache_size") as info:
        target_size(frame, None)
    assert str(info.value).startswith("the images differ in size (")  # not "all images differ"


def test_a_crop_larger_than_the_images_is_refused(workdir):
    params = tiny_params(augment={"crop_size": [80, 48], "preview_samples": 2})  # the scenes are 64x64
    with pytest.raises(SegpipeError) as info:
        run_data_stages(params)
    assert str(info.value) == ("augment.crop_size [80, 48] is larger than the images the cache holds (64x64 height "
                               "x width, the size of every image); set crop_size to at most [64, 64]")
    assert not CACHE.exists()
    with pytest.raises(SegpipeError, match="crop_size .80, 48. is larger than cache_size .64, 64."):
        tiny_params(augment={"crop_size": [80, 48], "cache_size": [64, 64]})


def test_policy_records_the_crop_the_model_trains_on(workdir):
    policy = run_data_stages(tiny_params(augment={"crop_size": [48, 40], "preview_samples": 2}))
    assert policy["size"] == [64, 64] and policy["train_size"] == [48, 40]
