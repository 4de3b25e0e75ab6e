"""The README says exactly what works today (its claims checked against dvc.yaml and the params)."""

import re

import yaml

from segpipe.catalog import TASKS
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_opening_names_only_the_tasks_that_work():
    opening = README.split("\n\n")[1]
    working = set(TASKS)
    assert working == {"semantic", "instance", "panoptic"}
    for task in working:
        assert task in opening
    assert "autoencoder" not in opening.split("Coming")[0], "the README's first paragraph advertises pretraining"


def test_every_preset_the_readme_runs_exists():
    from segpipe.presets import available

    named = set(re.findall(r"segpipe preset ([\w-]+) && dvc repro", README))
    assert named and named <= set(available())


def test_dvc_metrics_show_is_described_by_the_files_dvc_yaml_lists():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    metrics = {entry if isinstance(entry, str) else next(iter(entry)) for stage in stages.values()
               for entry in stage.get("metrics", [])}
    sentence = re.search(r"`dvc metrics show` prints (.*?)(?:\.\s|;)", README, re.DOTALL).group(1)
    named = set(re.findall(r"`(reports/[\w.]+)`", sentence))
    assert named == metrics


def test_params_header_points_at_the_presets_folder():
    header = (REPO / "params.yaml").read_text().splitlines()[1]
    folder = re.search(r"live in (\S+)/", header).group(1)
    assert (REPO / folder).is_dir() and any((REPO / folder).glob("*.yaml"))


def test_the_plots_page_folder_is_ignored_and_the_curves_png_is_a_plot():
    assert "/dvc_plots/" in (REPO / ".gitignore").read_text().splitlines()
    assert "dvc_plots/index.html" in README
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert "reports/train_curves.png" in [p if isinstance(p, str) else next(iter(p)) for p in plots]
