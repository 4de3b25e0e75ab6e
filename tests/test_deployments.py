"""Scheduled deployments against a real `prefect server`, served by `flow.serve` (pool workers: test_machines.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, new_project, sh, tiny_train_params, write_params
from tests.servers import bin_path, free_port, prefect_server, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    # the scheduler service looks for due schedules every 5 s instead of every 60 s; the schedules stay real
    with prefect_server(home, free_port(), PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5") as api:
        yield {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home), "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """An up-to-date tiny project, so a triggered run only checks the stages."""
    project = new_project(tmp_path_factory.mktemp("deployed"), tiny_train_params(), commit=True)
    sh(project, "dvc", "repro")
    return project


def api_call(env: dict, method: str, path: str, body: dict | None = None):
    import httpx

    response = httpx.request(method, env["PREFECT_API_URL"] + path, json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def prefect(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("prefect"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def wait_for_deployment(env: dict, name: str, process: subprocess.Popen) -> str:
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, "the serving process died"
        shown = prefect(env, "deployment", "inspect", name)
        if shown.returncode == 0:
            return shown.stdout
        time.sleep(1)
    raise TimeoutError(f"deployment {name} never appeared")


def test_served_deployment_has_the_schedule_and_runs_overlapping_runs_one_after_the_other(server, project, tmp_path):
    """Runs of `serve` share the project folder: two triggered at once both complete, the second after the first
    (it waits for the deployment's one slot instead of failing on DVC's lock)."""
    import time

    log = open(tmp_path / "serve.log", "w")
    serving = subprocess.Popen([sys.executable, "-m", "flows.deploy", "serve", "--project", str(project)],
                               cwd=REPO, env=server, stdout=log, stderr=log, start_new_session=True)
    try:
        inspected = wait_for_deployment(server, "segmentation-pipeline/segpipe", serving)
        assert "0 3 * * *" in inspected and "UTC" in inspected
        deployment = api_call(server, "GET", "/deployments/name/segmentation-pipeline/segpipe")
        ids = [api_call(server, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})["id"]
               for _ in range(2)]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = [api_call(server, "GET", f"/flow_runs/{run_id}") for run_id in ids]
            if all(run["state_type"] in ("COMPLETED", "FAILED", "CRASHED") for run in runs):
                break
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
        assert [run["state_type"] for run in runs] == ["COMPLETED", "COMPLETED"], [r["state"] for r in runs]
        first, second = sorted(runs, key=lambda run: run["start_time"])
        assert first["end_time"] <= second["start_time"]  # ISO times in one zone: they sort as text
    finally:
        stop(serving)  # the serving process goes before its server
    assert "segmentation-sweep/segpipe" in prefect(server, "deployment", "ls").stdout


def test_a_pool_deployment_needs_the_code_on_a_git_remote(server, project):
    """Workers on other machines fetch the code from git: a project without a remote is a one-line error."""
    deployed = subprocess.run([sys.executable, "-m", "flows.deploy", "pool", "--project", str(project),
                               "--pool", "segpipe-test-cpu", "--name", "pooled"], cwd=REPO, env=server,
                              capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 1
    assert deployed.stderr.strip().splitlines()[-1].startswith("segpipe deploy: error: ")
    assert "has no git remote 'origin': workers fetch the code from git" in deployed.stderr


def test_the_server_creates_scheduled_runs_and_serve_completes_one(server, project, tmp_path):
    """A cron schedule every minute: the server's scheduler (not a person) creates the runs, serve runs them."""
    import time

    project = shutil.copytree(project, tmp_path / "scheduled", symlinks=True)  # up to date: a run checks the stages
    write_params(project / "params.yaml", tiny_train_params(orchestration={"cron": "* * * * *"}))
    log = open(tmp_path / "serve.log", "w")
    serving = subprocess.Popen([sys.executable, "-m", "flows.deploy", "serve", "--project", str(project),
                                "--name", "every-minute"], cwd=REPO, env=server, stdout=log, stderr=log,
                               start_new_session=True)
    try:
        wait_for_deployment(server, "segmentation-pipeline/every-minute", serving)
        deployment = api_call(server, "GET", "/deployments/name/segmentation-pipeline/every-minute")
        query = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}
        deadline, runs = time.monotonic() + 300, []
        while time.monotonic() < deadline:
            runs = api_call(server, "POST", "/flow_runs/filter", query)
            if any(r["auto_scheduled"] and r["state_type"] == "COMPLETED" for r in runs):
                break
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(3)
        assert runs and all(r["auto_scheduled"] for r in runs), runs  # every run came from the scheduler
        completed = [r for r in runs if r["state_type"] == "COMPLETED"]
        assert completed, f"no scheduled run completed: {[r['state_type'] for r in runs]}"
    finally:
        stop(serving)
    server_log = (Path(server["PREFECT_HOME"]) / "server.log").read_text()
    assert "bulk DML" not in server_log and "InvalidRequestError" not in server_log
