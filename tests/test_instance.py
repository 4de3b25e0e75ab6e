"""Instance segmentation end to end on the synthetic scenes: Mask R-CNN from scratch, COCO AP, ONNX, predict."""

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
from PIL import Image

from segpipe import checkpoint
from segpipe.errors import SegpipeError
from segpipe.params import parse_params
from tests.conftest import (
    ALL_STAGES,
    REPO,
    predict_two_images,
    staged_project,
    tiny_instance_params,
    torchrun,
    train_killed_after,
    write_params,
)
from tests.servers import segpipe_server
from tests.serving import post, requests_counted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return staged_project(tmp_path_factory.mktemp("instance"), tiny_instance_params(), ALL_STAGES)


def test_training_logs_each_loss_term_and_keeps_the_best_mask_ap(pipeline):
    history = pd.read_csv(pipeline / "reports/train_history.csv")
    assert len(history) == 2
    for column in ("train_loss", "train_loss_classifier", "train_loss_box_reg", "train_loss_mask",
                   "train_loss_objectness", "train_loss_rpn_box_reg", "val_mask_ap", "val_box_ap"):
        assert column in history
    parts = history[[c for c in history if c.startswith("train_loss_")]].sum(axis=1)
    assert np.allclose(parts, history.train_loss, rtol=1e-6)  # the loss is the sum of its terms
    saved = checkpoint.load(pipeline / "models/model.pt")
    assert saved["config"]["task"] == "instance" and saved["config"]["class_ids"] == [3, 4, 5]
    assert saved["val_mask_ap"] == history.val_mask_ap.max()


def test_evaluate_writes_coco_metrics_per_class_ap_and_figures(pipeline):
    metrics = json.loads((pipeline / "reports/metrics.json").read_text())["test"]
    for key in ("mask_ap", "mask_ap50", "mask_ap75", "mask_ap_small", "mask_ap_medium", "mask_ap_large",
                "mask_ar_100", "box_ap", "box_ap50", "box_ar_100"):
        assert -1 <= metrics[key] <= 1  # -1 is COCO's "no object of this size"
    per_class = pd.read_csv(pipeline / "reports/per_class.csv")
    assert per_class["class"].tolist() == ["disc", "box", "triangle"]
    assert {"mask_ap", "mask_ap50", "box_ap", "instances", "detections"} <= set(per_class)
    assert per_class.instances.sum() > 0
    for name in ("precision_recall.png", "predictions.png"):
        assert Image.open(pipeline / "reports/evaluation" / name).size[0] > 200
    detections = json.loads((pipeline / "reports/test_predictions/detections.json").read_text())
    test = set(pd.read_parquet(pipeline / "data/split/test.parquet").sample_id)
    assert detections and {d["sample_id"] for d in detections} <= test
    assert all(d["category_id"] in (3, 4, 5) and len(d["bbox"]) == 4 and "counts" in d["segmentation"]
               for d in detections)


def test_export_matches_pytorch_and_describes_its_outputs(pipeline):
    report = json.loads((pipeline / "reports/export.json").read_text())
    assert report["parity_images"] == 4  # three test images and a blank one
    assert report["matched_share"] >= 0.999 and report["max_score_diff"] < 1e-3 and report["min_mask_iou"] > 0.95
    assert abs(report["parity_mask_ap_onnx"] - report["parity_mask_ap_torch"]) <= 0.005
    contract = json.loads((pipeline / "export/model.json").read_text())
    assert contract["task"] == "instance" and contract["output"]["names"] == ["boxes", "labels", "scores", "masks"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(pipeline / "export/model.onnx"), providers=["CPUExecutionProvider"])
    boxes, labels, scores, masks = session.run(None, {"images": np.zeros((1, 3, 40, 56), np.float32) - 2})
    assert masks.shape[1:] == (1, 40, 56) and len(boxes) == len(labels) == len(scores) == len(masks)


@pytest.mark.parametrize("model", ["export/model.onnx", "models/model.pt"])
def test_predict_writes_instance_maps_overlays_and_coco_results(pipeline, tmp_path, model):
    out = tmp_path / "out"
    images, done = predict_two_images(pipeline, model, out)
    ids = Image.open(out / f"{images[0].stem}.png")
    assert "wrote 2 instance maps" in done.stdout
    assert ids.mode.startswith("I") and ids.size == (64, 64)  # 16-bit instance ids
    assert np.asarray(Image.open(out / f"{images[0].stem}_overlay.png")).shape == (64, 64, 3)
    results = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in results} <= {p.name for p in images}
    for entry in results:
        assert entry["category_id"] in (3, 4, 5) and 0 <= entry["score"] <= 1
        assert entry["segmentation"]["size"] == [64, 64] and len(entry["bbox"]) == 4


def test_serve_answers_the_coco_results_and_instance_map_that_predict_writes(pipeline, tmp_path):
    out = tmp_path / "out"
    images, _ = predict_two_images(pipeline, "export/model.onnx", out)
    results = json.loads((out / "predictions.json").read_text())
    with segpipe_server(pipeline) as url:
        for image in images:
            expected = [{key: value for key, value in entry.items() if key not in ("file_name", "prediction")}
                        for entry in results if entry["file_name"] == image.name]
            assert post(url, image.read_bytes()).json() == expected  # the default for objects: COCO results
            assert post(url, image.read_bytes(), "png", multipart=True).content == (out / f"{image.stem}.png"
                                                                                      ).read_bytes()
        assert requests_counted(url, 200) == 2 * len(images)


def test_mlflow_holds_the_ap_metrics_and_the_onnx_model(pipeline):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{pipeline / 'mlflow.db'}")
    run_id = json.loads((pipeline / "models/mlflow_run.json").read_text())["mlflow_run_id"]
    run = client.get_run(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "val_mask_ap")] == [1, 2]
    for key in ("test_mask_ap", "test_box_ap", "train_loss_mask", "export_matched_share"):
        assert key in run.data.metrics
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert "onnx_model" in {m.name for m in logged}
    assert client.search_model_versions("name='segpipe-instance'")


def test_task_and_model_must_agree():
    with pytest.raises(SegpipeError, match="does not do task 'instance'"):
        parse_params({"task": "instance", "model": {"name": "unet"}})
    with pytest.raises(SegpipeError, match="does not do task 'semantic'"):
        parse_params({"model": {"name": "maskrcnn_resnet18_fpn"}})
    with pytest.raises(SegpipeError, match="task: 'video' is not a task segpipe has; choose one of semantic, "
                                           "instance, panoptic"):
        parse_params({"task": "video"})


def test_resume_after_kill_equals_the_uninterrupted_run(pipeline, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {}
    for name in ("whole", "crashed"):
        project = tmp_path / name
        shutil.copytree(pipeline, project, ignore=shutil.ignore_patterns("mlflow.db", ".segpipe", "models"))
        write_params(project / "params.yaml", tiny_instance_params(tracking={"enabled": False}))
        if name == "crashed":
            train_killed_after(project, 1, env)
        done = subprocess.run([sys.executable, "-m", "stages.train"], cwd=project, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = checkpoint.load(project / "models/model.pt")
    assert runs["whole"]["val_mask_ap"] == runs["crashed"]["val_mask_ap"]
    assert all(torch.equal(runs["whole"]["model"][k], runs["crashed"]["model"][k]) for k in runs["whole"]["model"])


def test_the_onnx_model_runs_images_with_and_without_detections(tmp_path):
    """Traced on an image with detections, the ONNX model also handles one with none (torchvision #2251)."""
    import onnxruntime as ort

    from segpipe.models.mask_rcnn import ExportableInstance, InstanceSegmenter, build_mask_rcnn
    from segpipe.onnx_export import INPUT, export_onnx
    from segpipe.tasks.instance import detection_parity

    torch.manual_seed(0)
    options = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 16,
               "detections_per_image": 20, "score_threshold": 0.0, "mask_threshold": 0.5}
    model = ExportableInstance(InstanceSegmenter(build_mask_rcnn("maskrcnn_resnet18_fpn", 2, options), [1])).eval()
    images = [torch.randn(1, 3, 64, 64) for _ in range(6)]
    with torch.no_grad():
        best = [float(model(x)[2].max()) for x in images]
    busy, quiet = images[int(np.argmax(best))], images[int(np.argmin(best))]
    model.model.detector.roi_heads.score_thresh = (max(best) + min(best)) / 2  # detections on one image only
    axes = {INPUT: {2: "height", 3: "width"}, "masks": {0: "n", 2: "height", 3: "width"},
            **{name: {0: "n"} for name in ("boxes", "labels", "scores")}}
    export_onnx(model, tmp_path / "model.onnx", busy, 17, ExportableInstance.OUTPUTS, axes)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        torch_runs = [[t.numpy() for t in model(x)] for x in (busy, quiet)]
    onnx_runs = [session.run(None, {INPUT: x.numpy()}) for x in (busy, quiet)]
    check = detection_parity(torch_runs, onnx_runs, 0.5)
    assert check["images_without_detections"] == 1 and check["torch_detections"] > 0
    assert check["matched_share"] == 1.0 and check["max_score_diff"] < 1e-4


@pytest.mark.parametrize("name", ["maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_each_mask_rcnn_trains_a_step_and_reloads_from_a_local_checkpoint(name, tmp_path):
    from segpipe.tasks import get_task

    task = get_task("instance")
    options = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 16,
               "detections_per_image": 10, "score_threshold": 0.0, "mask_threshold": 0.5}
    config = {"task": "instance", "name": name, "num_classes": 4, "class_ids": [2, 3], "mask_rcnn": options}
    torch.manual_seed(0)
    model = task.build_model(config).train()
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 20:50] = 1
    target = {"boxes": torch.tensor([[20.0, 10.0, 50.0, 30.0]]), "labels": torch.tensor([3]), "masks": masks}
    losses = model([torch.randn(3, 64, 64)], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pt")
    again = task.build_model(config, str(tmp_path / "weights.pt")).eval()
    image = torch.randn(3, 64, 64)
    with torch.no_grad():
        first, second = model.eval()([image])[0], again([image])[0]
    assert torch.equal(first["scores"], second["scores"]) and set(first["labels"].tolist()) <= {2, 3}


def test_coco_weights_offline_are_a_clear_error(monkeypatch):
    import urllib.error

    from segpipe.models import build_model
    from segpipe.models.mask_rcnn import build_mask_rcnn

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    options = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 16,
               "detections_per_image": 10, "score_threshold": 0.05, "mask_threshold": 0.5}
    with pytest.raises(SegpipeError, match="could not download .* set model.weights: null"):
        build_mask_rcnn("maskrcnn_resnet50_fpn", 3, options, "full")
    with pytest.raises(SegpipeError, match="no published 'backbone' weights exist for maskrcnn_resnet18_fpn"):
        build_mask_rcnn("maskrcnn_resnet18_fpn", 3, options, "backbone")
    config = {"name": "maskrcnn_resnet18_fpn", "num_classes": 3, "class_ids": [1, 2], "mask_rcnn": options}
    with pytest.raises(SegpipeError, match="model.weights: no published 'full' weights exist for maskrcnn_resnet18"):
        build_model(config, "full")


def test_ddp_val_mask_ap_equals_one_process_over_every_val_image(pipeline, tmp_path):
    """Two gloo processes gather their detections; the AP they report is the AP over the whole val split."""
    from segpipe.data.canonical import Categories
    from segpipe.data.dataset import CachedSegmentation
    from segpipe.distributed import Runtime
    from segpipe.engine import eval_loader, validate
    from segpipe.models import build_model
    from segpipe.step_path import choose_step_path
    from segpipe.tasks import get_task
    from segpipe.transforms import build

    project = tmp_path / "ddp"
    shutil.copytree(pipeline, project, ignore=shutil.ignore_patterns("mlflow.db", ".segpipe", "models"))
    train = {"epochs": 6, "batch_size": 4, "loader_workers": 0, "optimizer": {"name": "adamw", "lr": 0.002}}
    params = tiny_instance_params(train=train, tracking={"enabled": False})
    write_params(project / "params.yaml", params)
    done = torchrun(project, "train")
    assert "on cpu x2" in done.stdout
    saved = checkpoint.load(project / "models/model.pt")
    model = build_model(saved["config"])
    model.load_state_dict(saved["model"])
    policy = json.loads((project / "data/cache/augment_policy.json").read_text())
    categories = Categories.load(project / "data/cache/categories.json")
    task = get_task("instance")
    path = choose_step_path(params.train, torch.device("cpu"), params.model.name)  # as the training validated
    settings = path.settings(build(policy["device_eval"], categories.ignore_index))
    loader = eval_loader(CachedSegmentation(project / "data/cache/val", instances=True), 4, 0,
                         Runtime(0, 1, torch.device("cpu")), task.collate)
    evaluator = task.validation_evaluator(categories, task.criterion(None, categories, project), saved["config"])
    metrics = validate(model, loader, task, evaluator, settings, Runtime(0, 1, torch.device("cpu")))
    assert metrics["mask_ap"] == pytest.approx(saved["val_mask_ap"], abs=1e-12)
    assert saved["val_mask_ap"] > 0  # a real score, not the 0 of a model that finds nothing
