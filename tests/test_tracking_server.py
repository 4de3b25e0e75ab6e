"""The pipeline logging over HTTP to a real `mlflow server`, and what happens when that server is down."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALL_STAGES, REPO, run_stages, tiny_train_params, write_params
from tests.servers import free_port, mlflow_server, postgres_cluster

pytestmark = pytest.mark.slow


def server_run(uri: str, project: Path):
    import mlflow

    client = mlflow.MlflowClient(uri)
    local = json.loads((project / "models/mlflow_run.json").read_text())["run_id"]
    run_id = json.loads((project / ".segpipe/mlflow_run_ids.json").read_text())[local]
    return client, client.get_run(run_id)


def project_on_server(tmp_path: Path, monkeypatch) -> tuple[Path, int, str]:
    """An empty project folder (the working directory) whose tracking URI is a loopback port."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    write_params(project / "params.yaml", tiny_train_params())  # `segpipe sync-tracking` reads it
    return project, port, uri


def test_outage_then_http_server_receives_the_whole_run(tmp_path, monkeypatch):
    """Train and evaluate while no server listens; the run reaches the server when it is up."""
    project, port, uri = project_on_server(tmp_path, monkeypatch)
    params = tiny_train_params()
    run_stages(params, ALL_STAGES[:7])  # ingest .. evaluate with the server down
    outbox = project / ".segpipe/mlflow_outbox.jsonl"
    queued = [json.loads(line)["op"] for line in outbox.read_text().splitlines()]
    assert queued[0] == "create_run" and queued.count("metrics") == 3  # two epochs + the test metrics
    assert (project / "models/model.pt").exists() and (project / "reports/metrics.json").exists()

    with mlflow_server(tmp_path / "server", port):
        run_stages(params, ("export",))  # its first tracking call delivers the outbox, then logs the models
        assert not outbox.exists()
        client, run = server_run(uri, project)
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [1, 2]
        assert {"test_miou", "export_argmax_agreement"} <= set(run.data.metrics)
        assert run.data.params["model.name"] == "unet"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"evaluation", "export", "train_history.csv"} <= artifacts
        logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
        assert {m.name for m in logged} >= {"onnx_model", "pytorch_model"}
        # artifacts go through the server (--artifacts-destination), not straight to its disk
        assert any((tmp_path / "server" / "artifacts").rglob("confusion_matrix.png"))
        assert client.search_model_versions("name='segpipe-semantic'")
        done = subprocess.run([sys.executable, "-m", "segpipe.cli", "sync-tracking"], cwd=project, text=True,
                              capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert "nothing pending" in done.stdout


def test_server_dropping_out_mid_run_and_sync_command(tmp_path, monkeypatch):
    """The server goes away after training; evaluate queues; `segpipe sync-tracking` delivers later."""
    project, port, uri = project_on_server(tmp_path, monkeypatch)
    params = tiny_train_params()
    with mlflow_server(tmp_path / "server", port):
        run_stages(params, ALL_STAGES[:6])  # up to train, logged live
    run_stages(params, ("evaluate",))  # server gone: queued
    assert (project / ".segpipe/mlflow_outbox.jsonl").exists()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    failed = subprocess.run([sys.executable, "-m", "segpipe.cli", "sync-tracking"], cwd=project, text=True,
                            capture_output=True, env=env)
    assert failed.returncode == 1 and "still unreachable" in failed.stderr
    with mlflow_server(tmp_path / "server", port):
        done = subprocess.run([sys.executable, "-m", "segpipe.cli", "sync-tracking"], cwd=project, text=True,
                              capture_output=True, env=env)
        assert done.returncode == 0 and "delivered" in done.stdout, done.stderr
        _, run = server_run(uri, project)
        assert "test_miou" in run.data.metrics and "val_miou" in run.data.metrics


def test_team_server_on_postgresql_receives_a_pipeline_run_over_http(tmp_path, monkeypatch):
    """The README's team setup: `mlflow server` on a real PostgreSQL, artifacts served, the pipeline over HTTP."""
    project, port, uri = project_on_server(tmp_path, monkeypatch)
    with postgres_cluster(free_port()) as database, mlflow_server(tmp_path / "server", port, backend=database):
        run_stages(tiny_train_params(), ALL_STAGES)
        assert not (project / ".segpipe/mlflow_outbox.jsonl").exists()  # every call went through live
        client, run = server_run(uri, project)
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == [1, 2]
        assert {"test_miou", "export_argmax_agreement"} <= set(run.data.metrics)
        assert any((tmp_path / "server" / "artifacts").rglob("train_curves.png"))
        assert client.search_model_versions("name='segpipe-semantic'")
        import sqlalchemy

        with sqlalchemy.create_engine(database).connect() as connection:  # the run lives in PostgreSQL itself
            stored = connection.execute(sqlalchemy.text("select status from runs where run_uuid = :id"),
                                        {"id": run.info.run_id}).scalar_one()
        assert stored == "FINISHED"
