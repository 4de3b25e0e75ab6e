"""The real thing: `dvc repro` in a fresh git repo holding a copy of the project."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_project, new_project, sh, tiny_train_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project in a new git repository with DVC initialised and tiny params."""
    return new_project(tmp_path, tiny_train_params())


STAGES = ("ingest", "clean", "split", "augment", "pretrain", "train", "evaluate", "export")


def ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def change(project: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def test_repro_runs_all_then_nothing_then_only_what_changed(project):
    first = sh(project, "dvc", "repro")
    assert ran(first) == set(STAGES)
    # not a terminal: one line per epoch instead of an invisible bar, and lines for the cache and evaluate
    assert re.search(r"train: epoch 1/2 train_loss [\d.]+ val_loss [\d.]+ val_miou [\d.]+ .* img/s .*ETA", first)
    assert "train: epoch 2/2 " in first and "cache train: 16/16 img" in first and "evaluate: 4/4 img" in first
    for path in ("data/raw/manifest.parquet", "data/clean/manifest.parquet", "data/split/test.parquet",
                 "data/cache/train/image.npy", "reports/clean.json", "reports/split.json",
                 "reports/augment_preview.png", "models/model.pt", "reports/metrics.json", "export/model.onnx",
                 "reports/export.json", "dvc.lock"):
        assert (project / path).exists(), path
    second = sh(project, "dvc", "repro")
    assert ran(second) == set() and "up to date" in second
    assert_code_changes_name_exactly_their_stages(project)

    change(project, "evaluate", "boundary_tolerance", 3)
    assert ran(sh(project, "dvc", "repro")) == {"evaluate"}
    change(project, "augment", "hflip", 0.25)
    assert ran(sh(project, "dvc", "repro")) == {"augment", "pretrain", "train", "evaluate", "export"}
    metrics = sh(project, "dvc", "metrics", "show")
    assert "reports/clean.json" in metrics and "reports/metrics.json" in metrics

    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("augment:", "augmnet:"))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    failed = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True,
                            env={**os.environ, "PATH": path})
    assert failed.returncode != 0
    assert "unknown key 'augmnet' (did you mean 'augment'?)" in failed.stderr
    assert "missing from 'params.yaml'" not in failed.stderr + failed.stdout  # segpipe's error, not DVC's
    assert (project / "data/cache/train/image.npy").exists()  # DVC never got to remove augment's outputs


def assert_code_changes_name_exactly_their_stages(project: Path) -> None:
    """A change to a library module makes `dvc status` name the stages that import it, and only those."""
    from segpipe.stage_deps import _yaml, derived_deps

    deps = derived_deps(_yaml().load((project / "dvc.yaml").read_text())["stages"], project)
    for module in ("segpipe/transforms.py", "segpipe/trained_model.py"):  # two that dvc.yaml used to miss
        path = project / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        status = json.loads(sh(project, "dvc", "status", "--json"))
        path.write_text(original)
        assert set(status) == {name for name, listed in deps.items() if module in listed}, module
    assert json.loads(sh(project, "dvc", "status", "--json")) == {}


def test_default_pipeline_learns(tmp_path):
    """The embedded default, exactly as params.yaml sets it, must learn (guards against broken training)."""
    copy_project(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    sh(tmp_path, "dvc", "repro")
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())["test"]
    assert metrics["miou"] >= 0.6, metrics
    plots = sh(tmp_path, "dvc", "plots", "show", "-o", "plots")
    html = (tmp_path / "plots/index.html").read_text()
    assert "train_history.csv" in html and "confusion_matrix.png" in html, plots
    assert "train_curves.png" in html and (tmp_path / "reports/train_curves.png").stat().st_size > 5000


def test_the_same_source_spelt_another_way_reruns_only_ingest(tmp_path):
    from segpipe.params import parse_params
    from tests.conftest import mask_folder_params, save_pair, scene

    src = tmp_path / "src"
    for i in range(8):
        save_pair(src, f"s{i}", *scene(seed=i))
    params = parse_params({"base": {"workers": 1}, "ingest": mask_folder_params(src.resolve())})
    project = new_project(tmp_path / "project", params)
    assert ran(sh(project, "dvc", "repro", "split")) == {"ingest", "clean", "split"}
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace(str(src.resolve()), "../src"))
    assert ran(sh(project, "dvc", "repro", "split")) == {"ingest"}  # same data: clean and split stay cached

    # the source files are a dependency: a changed image reruns ingest and what its output feeds
    save_pair(src, "s0", *scene(seed=99))
    status = sh(project, "dvc", "status", "--with-deps", "split")
    assert "ingest:" in status and "modified:           data/source" in status
    assert ran(sh(project, "dvc", "repro", "split")) == {"ingest", "clean", "split"}
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status", "--with-deps", "split")
    # an archive too: a member changed inside it reruns ingest
    shutil.make_archive(str(tmp_path / "src"), "zip", src)
    (project / "params.yaml").write_text(text.replace(str(src.resolve()), str(tmp_path / "src.zip")))
    assert ran(sh(project, "dvc", "repro", "split")) == {"ingest"}
    save_pair(src, "s1", *scene(seed=98))
    shutil.make_archive(str(tmp_path / "src"), "zip", src)
    assert "ingest:" in sh(project, "dvc", "status", "--with-deps", "split")
    assert ran(sh(project, "dvc", "repro", "split")) == {"ingest", "clean", "split"}
