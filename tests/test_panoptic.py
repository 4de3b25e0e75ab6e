"""Panoptic segmentation end to end on the synthetic scenes: Panoptic-DeepLab and Panoptic FPN from scratch, PQ by
the official rules, COCO panoptic files, ONNX parity on the panoptic maps, predict, MLflow."""

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from segpipe import checkpoint
from segpipe.coco_panoptic import evaluate_folders, read_ids
from segpipe.errors import SegpipeError
from segpipe.params import parse_params
from tests.conftest import ALL_STAGES, predict_two_images, staged_project, tiny_panoptic_params
from tests.servers import segpipe_server
from tests.serving import post

pytestmark = pytest.mark.slow
MODELS = ("panoptic_deeplab_unet", "panoptic_fpn_resnet18")


@pytest.fixture(scope="module", params=MODELS)
def pipeline(request, tmp_path_factory) -> Path:
    return staged_project(tmp_path_factory.mktemp(request.param), tiny_panoptic_params(request.param), ALL_STAGES)


def test_training_logs_each_loss_term_and_keeps_the_best_pq(pipeline):
    history = pd.read_csv(pipeline / "reports/train_history.csv")
    saved = checkpoint.load(pipeline / "models/model.pt")
    terms = {"panoptic_deeplab_unet": ("train_semantic", "train_center", "train_offset"),
             "panoptic_fpn_resnet18": ("train_loss_semantic", "train_loss_mask", "train_loss_classifier")}
    for column in (*terms[saved["config"]["name"]], "val_pq", "val_sq", "val_rq", "val_pq_things", "val_miou"):
        assert column in history
    assert saved["config"]["task"] == "panoptic" and saved["config"]["class_ids"] == [3, 4, 5]
    assert saved["val_pq"] == history.val_pq.max()


def test_evaluate_writes_pq_per_class_and_coco_panoptic_files_that_score_the_same(pipeline):
    metrics = json.loads((pipeline / "reports/metrics.json").read_text())["test"]
    for key in ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff", "miou"):
        assert 0 <= metrics[key] <= 1
    per_class = pd.read_csv(pipeline / "reports/per_class.csv")
    assert per_class["class"].tolist() == ["sky", "grass", "road", "disc", "box", "triangle"]
    assert {"pq", "sq", "rq", "tp", "fp", "fn", "iou", "isthing"} <= set(per_class)
    folder = pipeline / "reports/test_predictions"
    score = evaluate_folders(folder / "gt.json", folder / "pred.json", folder / "gt", folder / "pred")
    assert score.images == metrics["images"]
    assert score.result.summary["All"]["pq"] == pytest.approx(metrics["pq"], abs=1e-12)
    assert score.result.summary["Stuff"]["pq"] == pytest.approx(metrics["pq_stuff"], abs=1e-12)
    assert Image.open(pipeline / "reports/evaluation/predictions.png").size[0] > 200


def test_export_matches_pytorch_on_the_panoptic_maps(pipeline):
    report = json.loads((pipeline / "reports/export.json").read_text())
    assert report["parity_images"] == 4  # three test images and a blank one
    assert report["panoptic_pixel_agreement"] >= 0.999
    assert abs(report["parity_pq_onnx"] - report["parity_pq_torch"]) <= 0.001
    contract = json.loads((pipeline / "export/model.json").read_text())
    assert contract["task"] == "panoptic"
    assert contract["output"]["postprocess"] in ("panoptic_deeplab", "panoptic_fpn")
    assert "stuff_area" in contract["output"]["settings"]


@pytest.mark.parametrize("model", ["export/model.onnx", "models/model.pt"])
def test_predict_writes_coco_panoptic_pngs_json_and_overlays(pipeline, tmp_path, model):
    out = tmp_path / "out"
    images, done = predict_two_images(pipeline, model, out)
    assert "wrote 2 panoptic PNGs" in done.stdout
    document = json.loads((out / "predictions.json").read_text())
    assert [c["id"] for c in document["categories"]] == list(range(6))
    assert [a["file_name"] for a in document["annotations"]] == [f"{p.stem}.png" for p in images]
    for annotation in document["annotations"]:
        ids = read_ids(out / annotation["file_name"])
        listed = {s["id"]: s for s in annotation["segments_info"]}
        assert set(np.unique(ids)) - {0} == set(listed)
        for segment_id, segment in listed.items():
            assert segment["area"] == int((ids == segment_id).sum())
    assert np.asarray(Image.open(out / f"{images[0].stem}_overlay.png")).shape == (64, 64, 3)


def test_serve_answers_the_segments_info_and_panoptic_png_that_predict_writes(pipeline, tmp_path):
    out = tmp_path / "out"
    images, _ = predict_two_images(pipeline, "export/model.onnx", out)
    document = json.loads((out / "predictions.json").read_text())
    with segpipe_server(pipeline) as url:
        for image, annotation in zip(images, document["annotations"], strict=True):
            answer = post(url, image.read_bytes(), multipart=True).json()
            assert answer["segments_info"] == annotation["segments_info"]
            assert base64.b64decode(answer["panoptic_png_base64"]) == (out / annotation["file_name"]).read_bytes()
            assert post(url, image.read_bytes(), "png").content == (out / annotation["file_name"]).read_bytes()


def test_mlflow_holds_the_pq_metrics_and_the_onnx_model(pipeline):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{pipeline / 'mlflow.db'}")
    run_id = json.loads((pipeline / "models/mlflow_run.json").read_text())["mlflow_run_id"]
    run = client.get_run(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "val_pq")] == [1, 2]
    for key in ("test_pq", "test_sq", "test_rq", "test_pq_things", "test_pq_stuff", "test_miou",
                "export_panoptic_pixel_agreement"):
        assert key in run.data.metrics
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert "onnx_model" in {m.name for m in logged}
    assert client.search_model_versions("name='segpipe-panoptic'")


def test_panoptic_models_need_task_panoptic_and_object_classes(workdir):
    with pytest.raises(SegpipeError, match="does not do task 'panoptic'"):
        parse_params({"task": "panoptic", "model": {"name": "unet"}})
    with pytest.raises(SegpipeError, match="nms_kernel: must be odd"):
        parse_params({"task": "panoptic", "model": {"name": "panoptic_deeplab_unet", "panoptic": {"nms_kernel": 4}}})
    from segpipe.data.canonical import Categories, Category
    from segpipe.tasks import get_task

    stuff_only = Categories((Category(0, "sky", (0, 0, 0), False), Category(1, "road", (1, 1, 1), False)), 255)
    with pytest.raises(SegpipeError, match="needs object classes"):
        get_task("panoptic").criterion(tiny_panoptic_params(), stuff_only, workdir)


def _scene_batch(size: int = 64, seed: int = 3):
    """One synthetic scene as a batch of one (uint8 image, semantic map, objects)."""
    from segpipe.data.dataset import make_sample
    from segpipe.data.instances import table_from_maps
    from segpipe.data.synthetic import generate_scene
    from segpipe.tasks.objects import collate_instances

    scene = generate_scene(seed, 7, (size, size), 4)
    sample = make_sample(scene.image, scene.semantic, scene.instance, table_from_maps(scene.semantic, scene.instance))
    return collate_instances([sample])


@pytest.mark.parametrize("name, steps, goal", [("panoptic_deeplab_unet", 150, 0.9),
                                               ("panoptic_fpn_resnet18", 150, 0.8)])
def test_each_model_overfits_one_scene(name, steps, goal):
    """Trained on one scene, the model's panoptic output on that scene scores a high PQ (things included)."""
    from segpipe.data.synthetic import CATEGORIES
    from segpipe.tasks import get_task
    from segpipe.tasks.panoptic import PanopticEvaluator

    task, params = get_task("panoptic"), tiny_panoptic_params(name)
    config = task.model_config(params, CATEGORIES)
    torch.manual_seed(0)
    model = task.build_model(config)
    criterion = task.criterion(params, CATEGORIES, Path("."))
    batch = _scene_batch()
    images = (batch["image"].float() / 255 - 0.45) / 0.25
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003 if "deeplab" in name else 0.001)
    model.train()
    for _ in range(steps):
        loss = sum(criterion(model, images, batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    evaluator = PanopticEvaluator(CATEGORIES, config)
    with torch.no_grad():
        evaluator.process(batch, task.forward_eval(model.eval(), images))
    metrics = evaluator.compute()
    assert metrics["pq"] >= goal and metrics["pq_things"] >= goal - 0.1, metrics


def test_panoptic_fpn_onnx_keeps_detections_and_any_image_size(tmp_path):
    """Traced at one size, the exported Panoptic FPN (resize, crop and upsample of the semantic head included) gives
    PyTorch's panoptic maps at other sizes and aspect ratios."""
    import onnxruntime as ort

    from segpipe.models import build_model
    from segpipe.onnx_export import INPUT, export_onnx
    from segpipe.tasks.panoptic_models import FAMILIES, postprocess_settings

    family = FAMILIES["panoptic_fpn"]
    config = tiny_panoptic_params("panoptic_fpn_resnet18").model.model_dump(mode="json")
    config.update(num_classes=4, class_ids=[2, 3])
    config["mask_rcnn"].update(max_size=96, score_threshold=0.0)
    config["panoptic"].update(instance_score_threshold=0.0, stuff_area=4)
    torch.manual_seed(0)
    module = family.onnx_module(build_model(config).eval())
    export_onnx(module, tmp_path / "model.onnx", torch.randn(1, 3, 64, 64), 17, family.output_names,
                family.dynamic_axes())
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    is_thing, settings = torch.tensor([False, False, True, True]), postprocess_settings(config)
    for shape in ((64, 64), (48, 80), (70, 50)):
        image = torch.randn(1, 3, *shape)
        with torch.no_grad():
            expected = family.postprocess(list(module(image)), is_thing, settings)
        got = family.postprocess([torch.from_numpy(a) for a in session.run(None, {INPUT: image.numpy()})], is_thing,
                                 settings)
        assert expected.category.shape == shape and int(expected.instance.max()) > 0
        assert torch.equal(expected.category, got.category) and torch.equal(expected.instance, got.instance)


def _evaluate_share(rank: int, world: int, port: int, items: list, config: dict, out: str) -> None:
    import torch.distributed as dist

    from segpipe.data.synthetic import CATEGORIES
    from segpipe.tasks.panoptic import PanopticEvaluator

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    evaluator = PanopticEvaluator(CATEGORIES, config)
    for batch, raw in items[rank::world]:
        evaluator.process(batch, raw)
    evaluator.reduce()
    if rank == 0:
        torch.save(evaluator.compute(), out)
    dist.destroy_process_group()


def test_pq_reduced_over_two_processes_equals_one_process(tmp_path):
    """Each gloo process scores half of the images; after the reduce both report the PQ over all of them."""
    import socket

    import torch.multiprocessing as mp

    from segpipe.data.synthetic import CATEGORIES
    from segpipe.tasks import get_task
    from segpipe.tasks.panoptic import PanopticEvaluator

    task = get_task("panoptic")
    config = task.model_config(tiny_panoptic_params(), CATEGORIES)
    config["panoptic"]["center_threshold"] = 0.0  # an untrained model: let every local maximum be a centre
    torch.manual_seed(0)
    model = task.build_model(config).eval()
    items = []
    for seed in range(5):
        batch = _scene_batch(seed=seed)
        with torch.no_grad():
            items.append((batch, task.forward_eval(model, (batch["image"].float() - 110) / 60)))
    whole = PanopticEvaluator(CATEGORIES, config)
    for batch, raw in items:
        whole.process(batch, raw)
    expected = whole.compute()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_evaluate_share, args=(2, port, items, config, str(tmp_path / "metrics.pt")), nprocs=2)
    reduced = torch.load(tmp_path / "metrics.pt")
    assert expected["pq"] > 0 and reduced == pytest.approx(expected, abs=1e-12)
