"""Autoencoder pretraining: encoders of every model, the stage on the synthetic scenes, fine-tuning from it, the
label fraction, resume, and dvc repro with pretraining on."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segpipe import checkpoint
from segpipe.errors import SegpipeError
from segpipe.models.encoders import encoder_of, load_encoder
from segpipe.pretraining import Autoencoder
from segpipe.tasks import get_task
from tests.conftest import (
    DATA_STAGES,
    REPO,
    new_project,
    sh,
    staged_project,
    tiny_instance_params,
    tiny_train_params,
    torchrun,
    train_killed_after,
    write_params,
)

PRETRAIN = {"enabled": True, "epochs": 3, "batch_size": 2, "lr": 0.003, "patch_size": 8}
UNET = {"name": "unet", "unet": {"depth": 2, "base_width": 8}}
HALF_LABELS = {"epochs": 2, "batch_size": 4, "loader_workers": 0, "label_fraction": 0.5}
MODELS = [("semantic", "unet", {"residual": False}), ("semantic", "unet", {"residual": True}),
          ("semantic", "lraspp_mobilenet_v3_large", {}), ("semantic", "deeplabv3_mobilenet_v3_large", {}),
          ("semantic", "fcn_resnet50", {}), ("instance", "maskrcnn_resnet18_fpn", {}),
          ("panoptic", "panoptic_deeplab_unet", {}), ("panoptic", "panoptic_fpn_resnet18", {})]


def model_config(task: str, name: str, unet: dict) -> dict:
    from segpipe.data.synthetic import CATEGORIES

    params = tiny_instance_params(task=task, model={"name": name, "unet": {"depth": 2, "base_width": 8, **unet},
                                                    "mask_rcnn": {"fpn_channels": 16}})
    return get_task(task).model_config(params, CATEGORIES)


@pytest.mark.parametrize("task, name, unet", MODELS)
def test_encoder_weights_load_into_every_model(task, name, unet, tmp_path):
    config = model_config(task, name, unet)
    torch.manual_seed(0)
    source = get_task(task).build_model(config)
    torch.manual_seed(1)
    target = get_task(task).build_model(config)
    weights = encoder_of(source).module.state_dict()
    checkpoint.save({"encoder": weights, "model_name": name}, tmp_path / "pretrained.pt")
    untouched = {k: v.clone() for k, v in target.state_dict().items()}
    load_encoder(target, tmp_path / "pretrained.pt", name)
    loaded = encoder_of(target).module.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    encoder_params = {id(p) for p in encoder_of(target).module.parameters()}
    others = [k for k, p in target.named_parameters() if id(p) not in encoder_params]
    assert others and all(torch.equal(target.state_dict()[k], untouched[k]) for k in others)  # heads untouched


def test_an_encoder_of_another_model_is_an_error_naming_both(tmp_path):
    config = model_config("semantic", "unet", {})
    weights = encoder_of(get_task("semantic").build_model(config)).module.state_dict()
    checkpoint.save({"encoder": weights, "model_name": "unet"}, tmp_path / "pretrained.pt")
    other = get_task("semantic").build_model(model_config("semantic", "lraspp_mobilenet_v3_large", {}))
    with pytest.raises(SegpipeError, match=r"\(the encoder of unet\) does not fit this model: .* is missing; .*"
                                           r"model.name is lraspp_mobilenet_v3_large: pretrain again"):
        load_encoder(other, tmp_path / "pretrained.pt", "lraspp_mobilenet_v3_large")
    checkpoint.save({"encoder": {}, "model_name": "unet"}, tmp_path / "off.pt")
    with pytest.raises(SegpipeError, match="holds no encoder .* pretrain.enabled: true"):
        load_encoder(other, tmp_path / "off.pt", "unet")


@pytest.mark.parametrize("task, name, unet", [MODELS[0], MODELS[2], MODELS[5]])
def test_the_decoder_sees_only_the_deepest_features(task, name, unet):
    """No skip connection: the decoder's one input is the encoder's last map, so an autoencoder cannot copy its
    input; and images with equal deepest features get equal reconstructions."""
    encoder = encoder_of(get_task(task).build_model(model_config(task, name, unet)))
    model = Autoencoder(encoder, 8).eval()
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reconstruction = model(images)
    assert reconstruction.shape == images.shape
    assert seen == [torch.Size([2, encoder.channels, 64 // encoder.stride, 64 // encoder.stride])]
    assert encoder.stride >= 4


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    params = tiny_train_params(model=UNET, pretrain=PRETRAIN, train=HALF_LABELS)
    return staged_project(tmp_path_factory.mktemp("pretrain"), params, (*DATA_STAGES, "pretrain"))


def test_pretrain_stage_learns_to_reconstruct_and_writes_the_encoder(pretrained):
    history = pd.read_csv(pretrained / "reports/pretrain/history.csv")
    assert len(history) == 3 and history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert history.val_psnr.iloc[-1] > history.val_psnr.iloc[0]
    saved = checkpoint.load(pretrained / "models/pretrained.pt")
    assert saved["model_name"] == "unet" and saved["val_psnr"] == history.val_psnr.max()
    assert set(saved["encoder"]) == set(encoder_of(get_task("semantic").build_model(saved["config"])).module
                                        .state_dict())
    assert (pretrained / "reports/pretrain/preview.png").stat().st_size > 10_000
    # pretraining saw every train image, those whose labels train.label_fraction leaves out included
    summary = json.loads((pretrained / "reports/pretrain.json").read_text())
    assert summary["images"] == len(pd.read_parquet(pretrained / "data/split/train.parquet"))


def test_training_starts_from_the_pretrained_encoder(pretrained, tmp_path):
    from segpipe.distributed import Runtime
    from segpipe.fsutil import working_directory
    from segpipe.training import Trainer

    params = tiny_train_params(model={**UNET, "weights": "pretrained"}, train=HALF_LABELS)
    with working_directory(pretrained):
        trainer = Trainer(params, Path("data/cache"), Path("data/split"), Runtime(0, 1, torch.device("cpu")))
    saved = checkpoint.load(pretrained / "models/pretrained.pt")["encoder"]
    state = encoder_of(trainer.model).module.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    train = pd.read_parquet(pretrained / "data/split/train.parquet")
    assert len(trainer.train_set) == len(trainer.labelled) == round(len(train) * 0.5)


def test_label_fraction_is_seeded_stratified_and_sets_the_epoch(pretrained):
    from segpipe.data.dataset import CachedSegmentation
    from segpipe.data.split import labelled_subset
    from segpipe.params import parse_params
    from segpipe.training import epoch_samples

    train = pd.read_parquet(pretrained / "data/split/train.parquet")
    for stratify in ("pixel_shares", "classes_present"):
        assert parse_params({"split": {"stratify": stratify}, "train": {"label_fraction": 0.25}})
        kept = labelled_subset(train, 0.25, stratify, seed=3)
        assert len(kept) == round(len(train) * 0.25)
        assert kept.sample_id.tolist() == labelled_subset(train, 0.25, stratify, seed=3).sample_id.tolist()
        assert kept.sample_id.tolist() != labelled_subset(train, 0.25, stratify, seed=4).sample_id.tolist()
        assert set(kept.sample_id) <= set(train.sample_id)
        present = np.array(kept.class_pixels.tolist()) > 0
        assert present.any(axis=0).all()  # every class keeps labelled images
    assert labelled_subset(train, 1.0, "pixel_shares", seed=3) is train
    assert len(labelled_subset(train, 0.001, "pixel_shares", seed=3)) == 1
    cached = CachedSegmentation(pretrained / "data/cache/train")
    ids = set(kept.sample_id)
    once = epoch_samples([cached], ids, None)
    assert sorted(cached.sample_ids[i] for i in once.indices) == sorted(ids)
    drawn = epoch_samples([cached], ids, 25)  # the labelled images in turn: each 2 or 3 times
    counts = pd.Series([cached.sample_ids[i] for i in drawn.indices]).value_counts()
    assert len(drawn) == 25 and set(counts.index) == ids and counts.max() - counts.min() <= 1
    with pytest.raises(SegpipeError, match="no labelled samples"):
        epoch_samples([cached], {"not-a-sample"}, None)


@pytest.mark.slow
def test_pretrain_resumes_after_kill_exactly(pretrained, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {}
    for name in ("whole", "crashed"):
        project = tmp_path / name
        shutil.copytree(pretrained, project, ignore=shutil.ignore_patterns("mlflow.db", ".segpipe", "models"))
        write_params(project / "params.yaml", tiny_train_params(model=UNET, pretrain={**PRETRAIN, "epochs": 4},
                                                                train=HALF_LABELS))
        if name == "crashed":
            train_killed_after(project, 2, env, stage="pretrain")
        done = subprocess.run([sys.executable, "-m", "stages.pretrain"], cwd=project, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = checkpoint.load(project / "models/pretrained.pt")
    assert "resuming after epoch 2" in done.stdout
    whole, crashed = runs["whole"]["encoder"], runs["crashed"]["encoder"]
    assert all(torch.equal(whole[k], crashed[k]) for k in whole)


@pytest.mark.slow
def test_pretrain_runs_in_two_ddp_processes(pretrained, tmp_path):
    project = tmp_path / "ddp"
    shutil.copytree(pretrained, project, ignore=shutil.ignore_patterns("mlflow.db", ".segpipe", "models"))
    write_params(project / "params.yaml", tiny_train_params(model=UNET, pretrain={**PRETRAIN, "epochs": 2}))
    done = torchrun(project, "pretrain")
    assert "on cpu x2" in done.stdout and done.stdout.count("pretrain: best val PSNR") == 1  # rank 0 writes
    assert len(pd.read_csv(project / "reports/pretrain/history.csv")) == 2
    saved = checkpoint.load(project / "models/pretrained.pt")
    assert saved["encoder"] and json.loads((project / "reports/pretrain.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_pretraining_takes_only_the_step_path_from_the_fine_tuning():
    import yaml

    from stages.pretrain import pretrain_params

    params = tiny_train_params(model=UNET, pretrain=PRETRAIN, train={
        "optimizer": {"name": "sgd", "lr": 0.1}, "schedule": {"name": "cosine"}, "freeze_encoder_epochs": 2,
        "grad_clip": 1.0, "amp": "off", "channels_last": True, "trial": {"study": "sweep", "number": 3}})
    train = pretrain_params(params).train
    assert train.trial.study is None and train.freeze_encoder_epochs == 0 and train.grad_clip is None
    assert (train.optimizer.name, train.optimizer.lr, train.schedule.name) == ("adamw", 0.003, "poly")
    assert (train.amp, train.channels_last, train.epochs, train.batch_size) == ("off", True, 3, 2)
    listed = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["pretrain"]["params"]
    assert [key for key in listed if key.startswith("train")] == ["train.amp", "train.channels_last"]


def test_dvc_repro_pretrains_then_fine_tunes(tmp_path):
    params = tiny_train_params(model={**UNET, "weights": "pretrained"}, pretrain=PRETRAIN)
    project = new_project(tmp_path / "project", params, commit=True)
    output = sh(project, "dvc", "repro")
    assert "Running stage 'pretrain'" in output and "pretrain: best val PSNR" in output
    assert output.index("pretrain: best val PSNR") < output.index("\ntrain: starting unet")
    assert (project / "reports/metrics.json").exists() and (project / "export/model.onnx").exists()
    # the scratch arm of an experiment, on half the labels: it shares the pretraining, which DVC lists as metrics
    output = sh(project, "dvc", "exp", "run", "-n", "scratch", "-S", "model.weights=null",
                "-S", "train.label_fraction=0.5")
    assert "Running stage 'pretrain'" not in output and "train: on the labels of 8 of 16 train images" in output
    from flows.sweep_trial import trial_metrics

    metrics = trial_metrics(project, "scratch")
    assert metrics["pretrain_seconds"] > 0 and metrics["pretrain_images"] == 16 and 0 <= metrics["test_miou"] <= 1
    off = tiny_train_params(model={**UNET, "weights": "pretrained"})
    write_params(project / "params.yaml", off)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    failed = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True,
                            env={**os.environ, "PATH": path})
    assert failed.returncode != 0 and "holds no encoder" in failed.stderr


def test_denoise_writes_the_reconstructions(pretrained, tmp_path):
    images = sorted((pretrained / "data/raw/images").glob("*.png"))[:2]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    done = subprocess.run([sys.executable, "-m", "segpipe.cli", "denoise", *map(str, images),
                           str(tmp_path / "broken.png"), "--model", str(pretrained / "models/pretrained.pt"),
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "wrote 2 reconstructions" in done.stdout and "skipped 1" in done.stdout and "broken.png" in done.stderr
    from PIL import Image

    for image in images:
        original, cleaned = (np.asarray(Image.open(p)) for p in (image, tmp_path / "out" / image.name))
        assert cleaned.shape == original.shape and cleaned.dtype == np.uint8
    before = images[0].read_bytes()
    again = subprocess.run([sys.executable, "-m", "segpipe.cli", "denoise", str(images[0].parent / "*.png"),
                            "--model", str(pretrained / "models/pretrained.pt"), "--out", str(images[0].parent)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.returncode == 1 and "over an input image" in again.stderr and images[0].read_bytes() == before


def test_a_frozen_encoder_keeps_its_pretrained_weights_then_learns(pretrained):
    from segpipe.distributed import Runtime
    from segpipe.fsutil import working_directory
    from segpipe.training import Trainer

    params = tiny_train_params(model={**UNET, "weights": "pretrained"},
                               train={"epochs": 2, "batch_size": 4, "loader_workers": 0, "freeze_encoder_epochs": 1,
                                      "label_fraction": 0.5})
    with working_directory(pretrained):
        trainer = Trainer(params, Path("data/cache"), Path("data/split"), Runtime(0, 1, torch.device("cpu")))
        start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        encoder = set(encoder_of(trainer.model).module.state_dict())
        weights = [k for k, _ in trainer.model.named_parameters()]
        trainer.run_epoch(0)
        after_one = trainer.model.state_dict()
        assert all(torch.equal(after_one[f"{k}"], start[k]) for k in weights if k.split(".", 1)[0] in ("stem", "down"))
        assert not all(torch.equal(after_one[k], start[k]) for k in weights if k.startswith("head"))
        trainer.run_epoch(1)
        assert not all(torch.equal(trainer.model.state_dict()[k], start[k]) for k in weights if k.startswith("down"))
    assert encoder and all(p.requires_grad for p in trainer.model.parameters())


def test_pretraining_is_an_mlflow_run_with_its_curve_and_preview(pretrained):
    import mlflow

    summary = json.loads((pretrained / "reports/pretrain.json").read_text())
    assert summary["enabled"] and summary["images"] > 0 and summary["seconds"] > 0
    client = mlflow.MlflowClient(f"sqlite:///{pretrained / 'mlflow.db'}")
    from segpipe import tracking
    from segpipe.fsutil import working_directory

    with working_directory(pretrained):
        run_id = tracking.server_run_id(summary["mlflow_run_id"])
    run = client.get_run(run_id)
    assert run.info.run_name == "pretrain" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "pretrain_val_psnr")] == [1, 2, 3]
    assert {a.path for a in client.list_artifacts(run_id, "pretrain")} == {
        "pretrain/history.csv", "pretrain/preview.png", "pretrain/pretrain.json"}


def test_extra_unlabelled_images_join_pretraining_and_bad_ones_are_reported(pretrained, tmp_path):
    from PIL import Image

    from tests.conftest import scene

    project = tmp_path / "project"
    shutil.copytree(pretrained, project, ignore=shutil.ignore_patterns("mlflow.db", ".segpipe", "models"))
    extra = tmp_path / "photos"
    (extra / "more").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(scene(80, 60, seed=100 + i)[0]).save(extra / ("more" if i % 2 else "") / f"p{i}.jpg")
    (extra / "broken.png").write_bytes(b"\x89PNG truncated")
    params = tiny_train_params(model=UNET, train=HALF_LABELS, tracking={"enabled": False},
                               pretrain={**PRETRAIN, "epochs": 1, "extra_images": str(extra)})
    staged_project(project, params, ("pretrain",))
    summary = json.loads((project / "reports/pretrain.json").read_text())
    assert summary["images"] == len(pd.read_parquet(project / "data/split/train.parquet")) + 5
    rejects = pd.read_csv(project / "reports/pretrain/extra_rejects.csv")
    assert rejects.file.tolist() == [str(extra / "broken.png")] and "cannot be decoded" in rejects.reason[0]
    assert not list((project / "data").glob("pretrain-extra-*"))  # the extra cache is temporary
