"""Export parity, `segpipe predict`, and the MLflow run read back from a real tracking store."""

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from segpipe.data.imageio import load_label
from segpipe.trained_model import TrainedModel
from tests.conftest import ALL_STAGES, REPO, predict_two_images, segpipe_cli, staged_project, tiny_train_params
from tests.servers import segpipe_server
from tests.serving import metric_values, post, requests_counted
from tests.test_clean import png_header

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A tiny project that went through every stage in-process."""
    return staged_project(tmp_path_factory.mktemp("pipeline"), tiny_train_params(), ALL_STAGES)


def test_export_parity_and_contract(pipeline):
    report = json.loads((pipeline / "reports/export.json").read_text())
    assert report["argmax_agreement"] >= 0.999 and report["max_abs_logit_diff"] < 1e-3
    assert report["onnxruntime_cpu_ms"] > 0 and report["torch_cpu_ms"] > 0
    contract = json.loads((pipeline / "export/model.json").read_text())
    assert contract["input"]["layout"] == "NCHW" and contract["input"]["channel_order"] == "RGB"
    assert [c["name"] for c in contract["classes"]] == ["sky", "grass", "road", "disc", "box", "triangle"]
    assert contract["output"]["name"] == "logits"
    assert contract["input"]["train_size"] == [48, 48]  # the crop the model trained on, not the 64x64 cache
    cost = report["cost"]  # the inference cost report
    trained = TrainedModel.load(pipeline / "models/model.pt", torch.device("cpu"))
    assert cost["parameters"] == sum(p.numel() for p in trained.model.parameters()) > 1000
    assert cost["train_size"] == [48, 48] and cost["size"] == [64, 64] and cost["batch_size"] == 8
    assert cost["gflops_at_size"] / cost["gflops_at_train_size"] == pytest.approx(64 * 64 / (48 * 48), rel=0.01)
    assert set(cost["runtimes"]) == {"eager_cpu", "onnxruntime_cpu"}  # no GPU here
    assert report["onnxruntime_cpu_ms"] == cost["runtimes"]["onnxruntime_cpu"]["p50_ms"]


def test_evaluate_reports(pipeline):
    metrics = json.loads((pipeline / "reports/metrics.json").read_text())["test"]
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou", "mean_dice", "boundary_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    per_class = (pipeline / "reports/per_class.csv").read_text().splitlines()
    assert per_class[0].startswith("class,iou,accuracy,dice") and len(per_class) == 7
    assert Image.open(pipeline / "reports/evaluation/confusion_matrix.png").size[0] > 200
    assert Image.open(pipeline / "reports/evaluation/predictions.png").size[1] > 200
    test = pd.read_parquet(pipeline / "data/split/test.parquet")
    labels = sorted((pipeline / "reports/test_predictions").glob("*.png"))
    assert [p.stem for p in labels] == sorted(test.sample_id)  # one predicted label map per test image
    assert np.asarray(Image.open(labels[0])).max() < 6


@pytest.mark.parametrize("model", ["export/model.onnx", "models/model.pt"])
def test_predict_writes_labels_and_overlays_and_skips_bad_files(pipeline, tmp_path, model):
    images = sorted((pipeline / "data/raw/images").glob("*.png"))[:3]
    from tests.test_clean import png_header

    broken = tmp_path / "broken.png"
    broken.write_bytes(images[0].read_bytes()[:200])
    (tmp_path / "huge.png").write_bytes(png_header(20000, 20000))  # refused from its header, never decoded
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "segpipe.cli", "predict", str(images[0]), str(images[1].parent / "scene_0000[12].png"),
         str(broken), str(tmp_path / "huge.png"), "--model", str(pipeline / model), "--out", str(out),
         "--max-pixels", "100000"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "wrote 3 label maps" in done.stdout and "skipped 2" in done.stdout
    assert "broken.png" in done.stderr and "Traceback" not in done.stderr
    assert "huge.png: 20000x20000 is 400,000,000 pixels, more than the limit of 100,000" in done.stderr
    labels = load_label(out / f"{images[0].stem}.png")
    assert labels.shape == (64, 64) and labels.max() < 6
    assert np.asarray(Image.open(out / f"{images[0].stem}_overlay.png")).shape == (64, 64, 3)


def test_predict_with_nothing_readable_fails(pipeline, tmp_path):
    done = subprocess.run([sys.executable, "-m", "segpipe.cli", "predict", str(tmp_path / "nothing-*.png"),
                           "--model", str(pipeline / "export/model.onnx")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1 and done.stderr.startswith("segpipe: error: no images found")


def test_mlflow_run_holds_the_whole_pipeline(pipeline):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{pipeline / 'mlflow.db'}")
    run_file = json.loads((pipeline / "models/mlflow_run.json").read_text())
    local_id = run_file["run_id"]
    run_id = json.loads((pipeline / ".segpipe/mlflow_run_ids.json").read_text())[local_id]
    assert run_file["mlflow_run_id"] == run_id and "local id" in run_file["about"]  # both ids, each named
    assert not (pipeline / ".segpipe/mlflow_outbox.jsonl").exists()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "unet" and run.data.params["train.epochs"] == "2"
    history = client.get_metric_history(run_id, "val_miou")
    assert [m.step for m in history] == [1, 2]
    for key in ("test_miou", "test_boundary_f1", "export_argmax_agreement", "train_loss", "export_cost_parameters",
                "export_cost_gflops_at_size", "export_cost_onnxruntime_cpu_p95_ms",
                "export_cost_eager_cpu_peak_rss_mb"):
        assert key in run.data.metrics
    for key in ("git.commit", "git.dirty", "version.torch", "device"):
        assert key in run.data.tags
    summary = json.loads((pipeline / "reports/train.json").read_text())
    assert run.data.tags["segpipe.steps"] == summary["steps"] and summary["steps"].startswith("channels_last, ")
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"evaluation", "export", "train_history.csv", "train_curves.png", "augment_preview.png"} <= artifacts
    evaluation = {Path(a.path).name for a in client.list_artifacts(run_id, "evaluation")}
    assert {"metrics.json", "per_class.csv", "confusion_matrix.png", "predictions.png"} <= evaluation
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert {m.name for m in logged} >= {"onnx_model", "pytorch_model"}
    for model in logged:  # any batch, height and width, as the exported model takes
        signature = mlflow.models.get_model_info(model.model_uri).signature
        assert signature.inputs.inputs[0].shape == (-1, 3, -1, -1)
        assert signature.outputs.inputs[0].shape == (-1, 6, -1, -1)
    versions = client.search_model_versions("name='segpipe-semantic'")
    assert versions and versions[0].run_id == run_id


def test_export_logs_the_models_without_mlflow_pickle_warning(pipeline):
    done = subprocess.run([sys.executable, "-m", "stages.export"], cwd=pipeline, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "argmax agreement" in done.stdout
    assert "Pickle" not in done.stderr and "WARNING" not in done.stderr, done.stderr


def test_export_refuses_a_model_with_non_finite_weights_or_outputs(pipeline, tmp_path, monkeypatch):
    import shutil

    from segpipe import checkpoint
    from segpipe.errors import SegpipeError
    from stages import export as export_stage

    project = tmp_path / "project"
    shutil.copytree(pipeline, project, ignore=shutil.ignore_patterns("mlflow.db", ".segpipe", "mlartifacts"))
    monkeypatch.chdir(project)
    params = tiny_train_params(tracking={"enabled": False})
    saved = checkpoint.load(project / "models/model.pt")
    last = [k for k in saved["model"] if k.endswith("weight")][-1]
    broken = {**saved, "model": {**saved["model"], last: saved["model"][last] * float("nan")}}
    checkpoint.save(broken, project / "models/model.pt")
    with pytest.raises(SegpipeError, match=f"holds weights that are not finite .* in {last}"):
        export_stage.run(params)
    # finite weights whose activations overflow: every convolution a million times stronger
    huge = {**saved, "model": {k: v * 1e6 if v.dim() == 4 else v for k, v in saved["model"].items()}}
    checkpoint.save(huge, project / "models/model.pt")
    with pytest.raises(SegpipeError, match="the model's 'logits' output is not finite .* on test image 1"):
        export_stage.run(params)
    assert json.loads((project / "export/model.json").read_text()) == json.loads(
        (pipeline / "export/model.json").read_text())


def predict_error(capsys, model: Path, tmp_path: Path) -> str:
    image = next(iter(sorted((model.parents[1] / "data/raw/images").glob("*.png"))), None)
    code, _, err = segpipe_cli(capsys, "predict", str(image), "--model", str(model), "--out", str(tmp_path / "out"))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    return err


def test_predict_refuses_model_files_it_cannot_use(pipeline, tmp_path, capsys):
    import shutil

    from segpipe import checkpoint

    assert "the pretrain stage's encoder" in predict_error(capsys, pipeline / "models/pretrained.pt", tmp_path)
    fake = tmp_path / "project"
    (fake / "models").mkdir(parents=True)
    shutil.copytree(pipeline / "data/raw/images", fake / "data/raw/images")
    checkpoint.save({"model": {}, "fingerprint": "x", "optimizer": {}}, fake / "models/last.pt")
    assert "a training checkpoint to resume from" in predict_error(capsys, fake / "models/last.pt", tmp_path)
    # an ONNX file beside a model.json written for another export: the contract's sha256 tells
    (fake / "export").mkdir()
    shutil.copy(pipeline / "export/model.onnx", fake / "export/model.onnx")
    contract = json.loads((pipeline / "export/model.json").read_text())
    (fake / "export/model.json").write_text(json.dumps({**contract, "sha256": "0" * 64}))
    assert "was written for another ONNX file" in predict_error(capsys, fake / "export/model.onnx", tmp_path)
    # and one that describes a model of another task
    other = {**contract, "task": "instance", "sha256": None}
    (fake / "export/model.json").write_text(json.dumps(other))
    message = predict_error(capsys, fake / "export/model.onnx", tmp_path)
    assert "returns ['logits']" in message and "describes a instance model" in message


def test_predict_never_writes_over_an_input_and_counts_truly(pipeline, tmp_path, capsys):
    import shutil

    source = sorted((pipeline / "data/raw/images").glob("*.png"))[:2]
    for folder, image in zip(("day", "night"), source, strict=True):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "frame.png")  # two inputs with one stem
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.png")}
    model = ("--model", str(pipeline / "export/model.onnx"))
    code, out, err = segpipe_cli(capsys, "predict", str(tmp_path / "day"), str(tmp_path / "night/frame.png"), "--out",
                                 str(tmp_path / "out"), *model)
    assert code == 0, err
    assert "wrote 2 label maps" in out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "day__frame.png", "day__frame_overlay.png", "night__frame.png", "night__frame_overlay.png"]
    for out in (tmp_path / "day", tmp_path / "day/predictions"):  # the input folder itself, or a folder inside it
        code, _, err = segpipe_cli(capsys, "predict", str(tmp_path / "day"), "--out", str(out), *model)
        assert code == 1 and "is inside the input folder" in err, err
    code, _, err = segpipe_cli(capsys, "predict", str(tmp_path / "night/*.png"), "--out", str(tmp_path / "night"),
                               *model)
    assert code == 1 and "over an input image" in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.png") if "out" not in p.parts} == before


def _png(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_serve_answers_what_predict_writes_refuses_bad_requests_and_counts_them(pipeline, tmp_path):
    images, _ = predict_two_images(pipeline, "export/model.onnx", tmp_path / "predicted")
    predicted = tmp_path / "predicted"
    log = tmp_path / "serve.log"
    first = images[0].read_bytes()
    grey = np.asarray(Image.open(images[0]).convert("L"))
    bad = {  # body -> (status, what the one-line error says)
        b"hello": (415, "not an image"),
        first[:300]: (400, "truncated"),
        _png(np.zeros((8, 8), np.float32), "F", "TIFF"): (415, "mode F"),
        b"": (400, "is empty"),
        png_header(400, 400): (413, "--max-pixels"),
        os.urandom(300_001): (413, "--max-bytes"),
    }
    with segpipe_server(pipeline, "--workers", "2", "--max-pixels", "100000", "--max-bytes", "300000",
                        log=log) as url:
        for image in images:
            label_png, overlay_png = (predicted / f"{image.stem}.png").read_bytes(), \
                (predicted / f"{image.stem}_overlay.png").read_bytes()
            assert post(url, image.read_bytes()).content == label_png  # the default for semantic: the label PNG
            assert post(url, image.read_bytes(), "png", multipart=True).content == label_png
            assert post(url, image.read_bytes(), "overlay").content == overlay_png
            shares = post(url, image.read_bytes(), "json").json()
            labels = load_label(predicted / f"{image.stem}.png")
            ids, counts = np.unique(labels, return_counts=True)
            assert {c["id"]: c["pixels"] for c in shares["classes"]} == dict(zip(ids, counts, strict=True))
            assert abs(sum(c["share"] for c in shares["classes"]) - 1) < 1e-4
        converted = post(url, _png(grey))
        assert converted.status_code == 200 and converted.headers["X-Segpipe-Repairs"] == "converted L to RGB"
        for body, (status, says) in bad.items():
            answer = post(url, body)
            assert answer.status_code == status and says in answer.json()["error"], answer.text
            assert "\n" not in answer.json()["error"] and "Traceback" not in answer.text
        no_file = httpx.post(f"{url}/predict", data={"note": "no file"}, files={"x": ("", b"")}, timeout=30)
        assert no_file.status_code == 400 and "no file" in no_file.json()["error"]
        assert post(url, first, "bmp").status_code == 400
        with ThreadPoolExecutor(16) as pool:  # 16 at once over two workers: every one answered, the same
            answers = list(pool.map(lambda _: post(url, first), range(16)))
        assert [a.status_code for a in answers] == [200] * 16
        assert {a.content for a in answers} == {(predicted / f"{images[0].stem}.png").read_bytes()}
        counted = metric_values(url)
        meta = httpx.get(f"{url}/metadata").json()
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "task": "semantic", "queued": 0}
    ok_posts = 4 * len(images) + 1 + 16
    assert counted['segpipe_requests_total{code="200",method="POST",route="/predict"}'] == ok_posts
    assert counted['segpipe_request_errors_total{code="413",route="/predict"}'] == 2
    assert counted['segpipe_request_errors_total{code="415",route="/predict"}'] == 2
    assert counted['segpipe_request_errors_total{code="400",route="/predict"}'] == 4
    assert counted['segpipe_request_seconds_count{route="/predict"}'] == ok_posts + 8
    assert counted["segpipe_inference_seconds_count"] >= ok_posts and counted["segpipe_model_load_seconds"] > 0
    assert "segpipe_requests_in_flight" in counted
    contract = json.loads((pipeline / "export/model.json").read_text())
    assert meta["contract"] == contract and meta["model"]["task"] == "semantic"
    assert meta["lineage"]["mlflow_run_id"] == json.loads((pipeline / "models/mlflow_run.json").read_text())[
        "mlflow_run_id"]
    assert log.read_text().count('"POST /predict') == ok_posts + 8  # one access-log line per request
    assert "Traceback" not in log.read_text()


def test_serve_a_registry_model_by_alias_and_answer_503_when_its_queue_is_full(pipeline, tmp_path, capsys):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{pipeline / 'mlflow.db'}")
    version = client.search_model_versions("name='segpipe-semantic'")[0]
    client.set_registered_model_alias("segpipe-semantic", "production", version.version)
    images, _ = predict_two_images(pipeline, "export/model.onnx", tmp_path / "predicted")
    big = _png(np.tile(np.linspace(0, 255, 2048, dtype=np.uint8)[:, None, None], (1, 2048, 3)))
    with segpipe_server(pipeline, "--model", "models:/segpipe-semantic@production", "--queue", "1") as url:
        meta = httpx.get(f"{url}/metadata").json()
        assert post(url, images[0].read_bytes()).content == (tmp_path / "predicted" / f"{images[0].stem}.png"
                                                              ).read_bytes()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(post, url, big)
            while httpx.get(f"{url}/health").json()["queued"] == 0 and not slow.done():
                time.sleep(0.01)
            refused = post(url, images[0].read_bytes())
            assert slow.result().status_code == 200
        assert refused.status_code == 503 and "busy" in refused.json()["error"] and refused.headers["Retry-After"]
        assert requests_counted(url, 503) == 1
    assert meta["lineage"] | {"git_commit": None} == {
        "registered_model": "segpipe-semantic", "model_version": str(version.version), "mlflow_run_id": version.run_id,
        "git_commit": None, "tracking_uri": meta["lineage"]["tracking_uri"]}
    assert meta["model"]["source"] == "models:/segpipe-semantic@production"
    code, _, err = segpipe_cli(capsys, "serve", "--model", "models:/segpipe-semantic/99",
                               "--params", str(pipeline / "params.yaml"))
    assert code == 1 and "models:/segpipe-semantic/99: not in the registry" in err
