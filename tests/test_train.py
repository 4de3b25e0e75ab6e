"""Training: resume after kill -9 equals an uninterrupted run; DDP with two CPU processes reduces metrics."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from segpipe import checkpoint
from segpipe.cpu_info import native_bf16
from segpipe.data.canonical import Categories
from segpipe.data.dataset import CachedSegmentation
from segpipe.distributed import Runtime
from segpipe.engine import eval_loader, validate
from segpipe.step_path import choose_step_path
from segpipe.tasks import get_task
from segpipe.tasks.semantic import PixelCriterion
from segpipe.transforms import build
from tests.conftest import (
    DATA_STAGES,
    REPO,
    staged_project,
    tiny_train_params,
    torchrun,
    torchrun_nodes,
    train_killed_after,
    write_params,
)

pytestmark = pytest.mark.slow
CHECKPOINT = Path("models/checkpoints/last.pt")


def train_params():
    return tiny_train_params(
        ingest={"synthetic": {"num_samples": 48, "size": [64, 64], "max_things": 3}},
        train={"epochs": 6, "batch_size": 4, "loader_workers": 1, "optimizer": {"lr": 0.01}},
    )


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A folder with params.yaml and the data stages done; tests copy it."""
    return staged_project(tmp_path_factory.mktemp("prepared"), train_params(), DATA_STAGES)


def copy_project(prepared: Path, target: Path) -> Path:
    shutil.copytree(prepared, target)
    return target


def train(cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "stages.train"], cwd=cwd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_resume_after_kill_equals_uninterrupted_run(prepared, tmp_path):
    whole = copy_project(prepared, tmp_path / "whole")
    train(whole)

    crashed = copy_project(prepared, tmp_path / "crashed")
    train_killed_after(crashed, 2, env())

    resumed = train(crashed)
    assert "resuming after epoch" in resumed.stdout
    # the CPU's fast path (channels_last, and bf16 where the CPU has it) trains the same weights run after run
    assert "steps: channels_last" in resumed.stdout
    assert ("bf16 autocast" if native_bf16() else "fp32") in resumed.stdout
    a, b = checkpoint.load(whole / "models/model.pt"), checkpoint.load(crashed / "models/model.pt")
    assert a["epoch"] == b["epoch"] and a["val_miou"] == b["val_miou"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    columns = ["epoch", "train_loss", "val_loss", "val_miou", "lr"]
    history_a = pd.read_csv(whole / "reports/train_history.csv")[columns]
    history_b = pd.read_csv(crashed / "reports/train_history.csv")[columns]
    pd.testing.assert_frame_equal(history_a, history_b)
    assert len(history_a) == 6
    assert not (crashed / CHECKPOINT).exists()  # the resume checkpoint is removed after success


def test_changed_params_do_not_resume_a_stale_checkpoint(prepared, tmp_path):
    project = copy_project(prepared, tmp_path / "stale")
    (project / CHECKPOINT).parent.mkdir(parents=True)
    checkpoint.save({"fingerprint": "from another run"}, project / CHECKPOINT)
    done = train(project)
    assert "ignoring models/checkpoints/last.pt (other params or data)" in done.stdout


@pytest.mark.parametrize("machines", [1, 2], ids=["one-machine", "two-machines"])
def test_ddp_two_cpu_processes_reduce_metrics(prepared, tmp_path, machines):
    """Two processes on one machine (torchrun --standalone), or one on each of two machines: each has its own
    folder with the data it pulled, and they meet through c10d rendezvous on loopback."""
    folders = [copy_project(prepared, tmp_path / f"machine-{k}") for k in range(machines)]
    params = train_params().model_copy(update={"train": train_params().train.model_copy(update={"epochs": 2})})
    for folder in folders:
        write_params(folder / "params.yaml", params)
    done = torchrun(folders[0], "train", env()) if machines == 1 else torchrun_nodes(folders, "train", env())
    assert "on cpu x2" in done.stdout
    assert done.stdout.count("train: best val mIoU") == 1  # only rank 0 reports and writes
    written = [folder for folder in folders if (folder / "models").exists()]
    assert len(written) == 1  # rank 0's machine (c10d rendezvous picks it, whatever --node-rank says)
    project = written[0]
    saved = checkpoint.load(project / "models/model.pt")
    history = pd.read_csv(project / "reports/train_history.csv")
    assert len(history) == 2

    # the reduced val mIoU of the best epoch equals a single-process validation over every val image
    from segpipe.models import build_model

    model = build_model(saved["config"])
    model.load_state_dict(saved["model"])
    policy_ignore = Categories.load(project / "data/cache/categories.json").ignore_index
    import json

    policy = json.loads((project / "data/cache/augment_policy.json").read_text())
    runtime = Runtime(0, 1, torch.device("cpu"))
    path = choose_step_path(params.train, runtime.device, params.model.name)  # as the training validated
    settings = path.settings(build(policy["device_eval"], policy_ignore))
    val = CachedSegmentation(project / "data/cache/val")
    task = get_task("semantic")
    criterion = PixelCriterion(torch.nn.CrossEntropyLoss(ignore_index=policy_ignore))
    categories = Categories.load(project / "data/cache/categories.json")
    evaluator = task.validation_evaluator(categories, criterion, saved["config"])
    metrics = validate(model, eval_loader(val, 2, 0, runtime), task, evaluator, settings, runtime)
    assert metrics["miou"] == pytest.approx(saved["val_miou"], abs=1e-9)


def test_early_stopping_stops_when_val_miou_stalls(prepared, tmp_path, monkeypatch):
    from stages import train as train_stage

    project = copy_project(prepared, tmp_path / "early")
    monkeypatch.chdir(project)
    params = tiny_train_params(
        ingest={"synthetic": {"num_samples": 48, "size": [64, 64], "max_things": 3}},
        train={"epochs": 6, "batch_size": 4, "loader_workers": 0,
               "early_stopping": {"patience": 2, "min_delta": 1.0}},  # no later epoch can beat epoch 1 by 1.0
        tracking={"enabled": False})
    state = train_stage.run(params)
    assert state.epoch == 3 and state.best_epoch == 1  # epoch 1 sets the best; two stale epochs stop it
    assert len(pd.read_csv(project / "reports/train_history.csv")) == 3


def test_a_non_finite_loss_stops_training_at_once_and_saves_no_model(prepared, tmp_path, monkeypatch):
    from segpipe.errors import SegpipeError
    from stages import train as train_stage

    project = copy_project(prepared, tmp_path / "diverges")
    monkeypatch.chdir(project)
    params = tiny_train_params(
        ingest={"synthetic": {"num_samples": 48, "size": [64, 64], "max_things": 3}},
        train={"epochs": 3, "batch_size": 4, "loader_workers": 0, "optimizer": {"name": "sgd", "lr": 1e30}},
        tracking={"enabled": False})
    with pytest.raises(SegpipeError, match=r"the training loss is not finite at epoch 1/3, step \d+ \(loss (nan|inf)"):
        train_stage.run(params)
    assert not (project / "models/model.pt").exists()


def test_the_resume_fingerprint_covers_the_content_of_the_initial_weights(prepared, tmp_path, monkeypatch):
    """A changed encoder or weights file never resumes a run that started from the old one."""
    from stages.train import _fingerprint

    project = copy_project(prepared, tmp_path / "weights")
    monkeypatch.chdir(project)
    (project / "models").mkdir(exist_ok=True)
    checkpoint.save({"encoder": {"a": torch.zeros(2)}, "model_name": "unet"}, project / "models/pretrained.pt")
    checkpoint.save({"model": {"a": torch.zeros(2)}}, project / "start.pt")
    for weights, path in (("pretrained", project / "models/pretrained.pt"), ("start.pt", project / "start.pt")):
        params = tiny_train_params(model={"name": "unet", "unet": {"depth": 2, "base_width": 8}, "weights": weights})
        before = _fingerprint(params)
        saved = checkpoint.load(path)
        checkpoint.save({**saved, "other": torch.ones(1)}, path)
        assert _fingerprint(params) != before, weights
