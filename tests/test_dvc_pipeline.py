"""The real thing: `dvc repro` in a fresh git repo holding a copy of the project."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_params, write_params

pytestmark = pytest.mark.slow
PROJECT_FILES = ("dvc.yaml", "stages", "segpipe", ".dvcignore")


def sh(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": ""}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project in a new git repository with DVC initialised and tiny params."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    write_params(tmp_path / "params.yaml", tiny_params())
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    sh(tmp_path, "dvc", "config", "core.analytics", "false")
    return tmp_path


def ran(output: str) -> set[str]:
    return {stage for stage in ("ingest", "clean", "split", "augment") if f"Running stage '{stage}'" in output}


def test_repro_runs_all_then_nothing_then_only_what_changed(project):
    first = sh(project, "dvc", "repro")
    assert ran(first) == {"ingest", "clean", "split", "augment"}
    for path in ("data/raw/manifest.parquet", "data/clean/manifest.parquet", "data/split/test.parquet",
                 "data/cache/train/image.npy", "reports/clean.json", "reports/split.json",
                 "reports/augment_preview.png", "dvc.lock"):
        assert (project / path).exists(), path
    second = sh(project, "dvc", "repro")
    assert ran(second) == set() and "up to date" in second

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["augment"]["hflip"] = 0.25
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(sh(project, "dvc", "repro")) == {"augment"}

    params["split"]["val"] = 0.2
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(sh(project, "dvc", "repro")) == {"split", "augment"}
    metrics = sh(project, "dvc", "metrics", "show")
    assert "reports/clean.json" in metrics and "reports/split.json" in metrics
