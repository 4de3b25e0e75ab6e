"""Overrides change exactly their own lines of params.yaml: comments, order and formatting stay."""

import difflib

import pytest
import yaml

from segpipe.errors import SegpipeError
from segpipe.overrides import write_overrides
from tests.conftest import REPO


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_an_override_changes_only_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    before = (REPO / "params.yaml").read_text()
    path.write_text(before)
    params = write_overrides(path, {"train.optimizer.lr": 0.001})
    assert params.train.optimizer.lr == 0.001
    removed, added = _changed_lines(before, path.read_text())
    assert removed == ["  optimizer: {name: adamw, lr: 0.003, momentum: 0.9, weight_decay: 0.0001}   "
                       "# sgd | adamw | rmsprop"]
    assert added == [removed[0].replace("lr: 0.003", "lr: 0.001")]


def test_several_overrides_of_every_kind_keep_the_rest_of_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    before = (REPO / "params.yaml").read_text()
    path.write_text(before)
    write_overrides(path, {"model.name": "unet", "augment.crop_size": [96, 96], "train.grad_clip": 1.0,
                           "ingest.sha256": None})
    removed, added = _changed_lines(before, path.read_text())
    assert len(removed) == len(added) == 3  # sha256 was null already: that line stays
    assert any(line.startswith("  crop_size: [96, 96]") for line in added)
    assert any(line.startswith("  name: unet ") and "# semantic: unet |" in line for line in added)  # comment kept
    assert yaml.safe_load(path.read_text())["ingest"]["sha256"] is None


def test_a_bad_override_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "params.yaml"
    before = (REPO / "params.yaml").read_text()
    path.write_text(before)
    with pytest.raises(SegpipeError, match="train.epochs"):
        write_overrides(path, {"train.epochs": 0})
    assert path.read_text() == before
