"""The tracking outbox loses nothing and mixes nothing up: torn lines, replays twice, calls refused for good,
files kept when queued, nothing unpickled, a run in a temporary folder, two processes at once."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segpipe import tracking
from segpipe.tracking.calls import execute
from segpipe.tracking.outbox import Outbox
from segpipe.tracking.replay import submit
from tests.conftest import ALL_STAGES, REPO, run_stages, tiny_train_params, write_params
from tests.servers import free_port


@pytest.fixture(scope="module")
def queued(tmp_path_factory) -> Path:
    """A tiny project that ran every stage while its tracking server was down: every MLflow call is queued."""
    project = tmp_path_factory.mktemp("queued")
    before = os.getcwd()
    os.chdir(project)
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        write_params(project / "params.yaml", tiny_train_params())
        run_stages(tiny_train_params(), ALL_STAGES)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
        os.chdir(before)
    return project


def replay_target(project: Path, tmp_path: Path, monkeypatch) -> str:
    work = tmp_path / "work"
    shutil.copytree(project, work)
    monkeypatch.chdir(work)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    return store


@pytest.mark.slow
def test_a_replay_killed_after_every_call_then_run_again_logs_everything_once(queued, tmp_path, monkeypatch):
    import mlflow

    store = replay_target(queued, tmp_path, monkeypatch)
    outbox = Outbox()
    (Path("reports/metrics.json")).write_text('{"a later run": "wrote this"}')  # queued artifacts were copied
    with outbox.path.open("a") as handle:  # what kill -9 in the middle of queueing a call leaves
        handle.write('{"op": "metrics", "run_id": "local-')
    params = tiny_train_params()
    with outbox.locked():
        ops = outbox.pending()
    assert [op["op"] for op in ops][:2] == ["create_run", "metrics"] and "models" in [op["op"] for op in ops]
    assert "cut off while it was written" in outbox.rejected.read_text()
    assert sorted(p.name for p in outbox.folder.iterdir() if p.is_dir()) == ["outbox-files"]  # no staging left
    for op in ops:  # a sync-tracking killed after each call it made, before it could strike it off the outbox
        execute(params.tracking, op)
    client = mlflow.MlflowClient(store)
    client.delete_model_version("segpipe-semantic", "1")  # as if killed after logging the model, before registering
    assert tracking.flush(params.tracking) == len(ops) and not outbox.path.exists()
    runs = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_miou")] == [
        (row["epoch"], row["val_miou"]) for row in json_rows(Path("reports/train_history.csv"))]
    assert len(client.get_metric_history(run_id, "test_miou")) == 1
    assert len(client.search_model_versions("name='segpipe-semantic'")) == 1
    assert sorted(m.name for m in client.search_logged_models(experiment_ids=[runs[0].info.experiment_id])) == [
        "onnx_model", "pytorch_model"]
    logged = json.loads(Path(client.download_artifacts(run_id, "evaluation/metrics.json", str(tmp_path))).read_text())
    assert "test" in logged  # the file as it was when queued, not what a later run wrote
    assert "model_weights" in {a.path for a in client.list_artifacts(run_id)}


def json_rows(path: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(path).to_dict("records")


@pytest.mark.slow
def test_a_call_refused_for_good_is_set_aside_and_the_rest_delivered(queued, tmp_path, monkeypatch):
    import mlflow

    store = replay_target(queued, tmp_path, monkeypatch)
    outbox = Outbox()
    lines = outbox.path.read_text().splitlines()
    bogus = {"op": "metrics", "run_id": "no-such-run", "values": {"x": 1.0}, "step": 0, "time": 1, "op_id": "bogus"}
    outbox.path.write_text("\n".join([lines[0], json.dumps(bogus), *lines[1:]]) + "\n")
    done = subprocess.run([sys.executable, "-m", "segpipe.cli", "sync-tracking"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert f"delivered {len(lines)} of {len(lines) + 1} queued calls" in done.stdout
    assert "refused a 'metrics' call" in done.stderr and not outbox.path.exists()
    assert json.loads(outbox.rejected.read_text().splitlines()[-1])["op_id"] == "bogus"
    client = mlflow.MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])[0]
    assert run.info.status == "FINISHED" and "test_miou" in run.data.metrics


def test_replay_never_unpickles_a_file_named_in_the_outbox(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    proof = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {proof}",))

    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}))
    params = tiny_train_params()
    submit(params, {"op": "create_run", "local_id": "local-1", "experiment": "segpipe", "run_name": None,
                    "tags": {}, "time": 1, "params": {}})
    Outbox().folder.mkdir(exist_ok=True)
    with Outbox().locked():
        Outbox().append({"op": "models", "run_id": "local-1", "onnx": str(evil), "weights": str(evil),
                         "example": str(evil), "registered_model": "x", "onnx_requirements": [],
                         "torch_requirements": []})
    tracking.flush(params.tracking)
    assert not proof.exists()
    reason = json.loads(Outbox().rejected.read_text())["reason"]
    assert "refused a 'models' call" in reason and "not a readable segpipe checkpoint" in reason


def test_a_run_in_a_temporary_folder_queues_where_it_outlives_the_folder(tmp_path, monkeypatch):
    import mlflow

    state, temporary = tmp_path / "project/.segpipe", tmp_path / "exps/tmp-trial"
    temporary.mkdir(parents=True)
    monkeypatch.chdir(temporary)
    monkeypatch.setenv("SEGPIPE_STATE_DIR", str(state))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    params = tiny_train_params()
    run_id = tracking.start_run(params, "cpu")
    (temporary / "curve.csv").write_text("epoch,loss\n1,0.5\n")
    tracking.log_metrics(params, run_id, {"val_miou": 0.5}, step=1)
    tracking.log_artifacts(params, run_id, [temporary / "curve.csv"])
    assert (state / "mlflow_outbox.jsonl").is_file() and not (temporary / ".segpipe").exists()
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(tmp_path / "exps")  # dvc exp run --temp removes its folder when the trial ends
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert tracking.flush(params.tracking) == 3
    client = mlflow.MlflowClient(store)
    run = client.get_run(tracking.server_run_id(run_id))
    assert run.data.metrics["val_miou"] == 0.5 and [a.path for a in client.list_artifacts(run.info.run_id)] == [
        "curve.csv"]


def test_a_restored_sweep_trial_gets_one_child_run_however_often_the_sweep_closes(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    params = tiny_train_params()
    parent = tracking.server_run_id(tracking.start_run(params, "sweep", run_name="sweep"))
    monkeypatch.setenv("SEGPIPE_PARENT_RUN_ID", parent)
    monkeypatch.setenv("SEGPIPE_TRIAL", "sweep-1")
    tracking.start_run(params, "cpu")  # trial 1 trained, so it has a child run of its own
    for _ in range(2):  # the sweep closed twice (a retried flow): still one child per trial
        for trial in ("sweep-1", "sweep-2"):
            tracking.log_restored_trial(params, parent, trial, {"train.optimizer.lr": 0.01}, {"val_miou": 0.25})
    client = mlflow.MlflowClient(store)
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(run.data.tags["segpipe.trial"] for run in children) == ["sweep-1", "sweep-2"]
    restored = next(run for run in children if run.data.tags["segpipe.trial"] == "sweep-2")
    assert restored.data.tags["segpipe.restored_from_dvc_cache"] == "true" and restored.info.status == "FINISHED"
    assert restored.data.params == {"train.optimizer.lr": "0.01"} and restored.data.metrics == {"val_miou": 0.25}


QUEUE_MANY = """
import sys
from segpipe.tracking.outbox import Outbox
outbox = Outbox()
for i in range(300):
    with outbox.locked():
        outbox.append({"op": "metrics", "run_id": sys.argv[1], "values": {"i": i}, "step": i, "time": i})
"""


def test_two_processes_queueing_at_once_write_whole_lines(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGPIPE_STATE_DIR": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-c", QUEUE_MANY, name], env=env) for name in ("a", "b")]
    assert [w.wait(120) for w in workers] == [0, 0]
    with Outbox(tmp_path).locked():
        ops = Outbox(tmp_path).pending()
    assert len(ops) == 600 and not (tmp_path / "mlflow_outbox.rejected.jsonl").exists()
    for name in ("a", "b"):
        assert [op["step"] for op in ops if op["run_id"] == name] == list(range(300))
