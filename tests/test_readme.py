"""The README says exactly what works today (its claims checked against dvc.yaml and the params)."""

import re

import yaml

from segpipe.config import ModelName
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_opening_names_only_the_tasks_that_work():
    opening = README.split("\n\n")[1]
    semantic_models = set(ModelName.__args__)
    assert "semantic" in opening and semantic_models
    for coming in ("instance", "panoptic"):
        assert coming not in opening, f"the README's first paragraph advertises {coming} segmentation"


def test_dvc_metrics_show_is_described_by_the_files_dvc_yaml_lists():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    metrics = {next(iter(entry)) for stage in stages.values() for entry in stage.get("metrics", [])}
    sentence = re.search(r"`dvc metrics show` prints (.*?)(?:\.\s|;)", README, re.DOTALL).group(1)
    named = set(re.findall(r"`(reports/[\w.]+)`", sentence))
    assert named == metrics
