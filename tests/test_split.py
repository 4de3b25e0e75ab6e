import numpy as np
import pandas as pd
import pytest

from segpipe.data.split import class_shares, split
from segpipe.errors import SegpipeError
from segpipe.params import parse_params


def manifest(n: int, predefined: list[str] | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 1000, (n, 4))
    pixels[: n // 3, 3] = 0  # a third of the samples lack the rare class
    return pd.DataFrame({
        "sample_id": [f"s{i:03d}" for i in range(n)],
        "source_split": predefined or [""] * n,
        "class_pixels": pixels.tolist(),
    })


def test_ratio_split_is_seeded_complete_and_disjoint():
    params = parse_params({"split": {"val": 0.2, "test": 0.1}}).split
    parts, method = split(manifest(100), params, seed=1)
    again, _ = split(manifest(100), params, seed=1)
    other, _ = split(manifest(100), params, seed=2)
    assert method == "ratio"
    assert {k: len(v) for k, v in parts.items()} == {"train": 70, "val": 20, "test": 10}
    ids = [set(p.sample_id) for p in parts.values()]
    assert set.union(*ids) == set(manifest(100).sample_id) and sum(map(len, ids)) == 100
    assert all(parts[k].sample_id.tolist() == again[k].sample_id.tolist() for k in parts)
    assert parts["test"].sample_id.tolist() != other["test"].sample_id.tolist()


def test_ratio_split_keeps_class_shares_close():
    params = parse_params({"split": {"val": 0.2, "test": 0.2}}).split
    parts, _ = split(manifest(200), params, seed=0)
    shares = class_shares(parts, ["a", "b", "c", "rare"])
    for name in ("a", "b", "c", "rare"):
        values = [shares[s][name] for s in ("train", "val", "test")]
        assert max(values) - min(values) < 0.05


def test_predefined_split_is_honoured_and_can_be_ignored():
    labels = ["train"] * 6 + ["val"] * 3 + ["test"] * 2
    frame = manifest(11, labels)
    parts, method = split(frame, parse_params({}).split, seed=0)
    assert method == "predefined"
    assert {k: len(v) for k, v in parts.items()} == {"train": 6, "val": 3, "test": 2}
    _, method = split(frame, parse_params({"split": {"predefined": "ignore"}}).split, seed=0)
    assert method == "ratio"
    with pytest.raises(SegpipeError, match="no train/val/test source split"):
        split(manifest(11), parse_params({"split": {"predefined": "use"}}).split, seed=0)


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(SegpipeError, match="too few"):
        split(manifest(1), parse_params({"split": {"val": 0.4, "test": 0.4}}).split, seed=0)


def test_classes_present_split_puts_every_class_in_every_split_with_exact_sizes():
    rng = np.random.default_rng(0)
    present = rng.random((60, 8)) < 0.5
    present[:, 6:] = False
    present[[3, 17, 40], 6] = True  # a rare class in three images
    present[[5, 25, 50, 55], 7] = True
    frame = pd.DataFrame({"sample_id": [f"s{i:02d}" for i in range(60)], "source_split": [""] * 60,
                          "class_pixels": (present * 100).tolist()})
    params = parse_params({"split": {"val": 0.2, "test": 0.2, "stratify": "classes_present"}}).split
    parts, method = split(frame, params, seed=3)
    assert method == "ratio" and {k: len(v) for k, v in parts.items()} == {"train": 36, "val": 12, "test": 12}
    assert set().union(*(set(p.sample_id) for p in parts.values())) == set(frame.sample_id)
    for name, part in parts.items():
        held = (np.array(part.class_pixels.tolist()) > 0).any(axis=0)
        assert held.all(), f"{name} lacks classes {np.flatnonzero(~held)}"
    again, _ = split(frame, params, seed=3)
    assert all(again[k].sample_id.tolist() == parts[k].sample_id.tolist() for k in parts)
