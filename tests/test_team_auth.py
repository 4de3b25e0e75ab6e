"""The team servers are not open to everyone: MLflow's basic-auth app and Prefect's API auth string refuse a
client without credentials and serve one with them; `make` never prints a password."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from segpipe import tracking
from segpipe.errors import SegpipeError
from tests.conftest import REPO, tiny_train_params
from tests.servers import free_port, mlflow_server, prefect_server

pytestmark = pytest.mark.slow
ADMIN = ("admin", "a-Long-Passw0rd-for-tests")


def test_mlflow_server_refuses_a_client_without_credentials_and_serves_one_with_them(tmp_path, monkeypatch):
    import mlflow

    port = free_port()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    params = tiny_train_params()
    with mlflow_server(tmp_path / "server", port, admin=ADMIN):
        with pytest.raises(SegpipeError, match="refused the credentials: set MLFLOW_TRACKING_USERNAME"):
            tracking.start_run(params, "cpu")
        assert (tmp_path / ".segpipe/mlflow_outbox.jsonl").is_file()  # kept, not lost
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(SegpipeError, match="refused the credentials"):
            tracking.log_metrics(params, "local-x", {"a": 1.0})
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        run_id = tracking.start_run(params, "cpu")  # delivers the queued run first, then this one
        tracking.log_metrics(params, run_id, {"val_miou": 0.5}, step=1)
        assert not (tmp_path / ".segpipe/mlflow_outbox.jsonl").exists()
        client = mlflow.MlflowClient(f"http://127.0.0.1:{port}")
        assert client.get_run(tracking.server_run_id(run_id)).data.metrics["val_miou"] == 0.5


FLOW = "from prefect import flow\n@flow\ndef hello():\n    return 42\nprint('result', hello())\n"


def test_prefect_server_refuses_a_client_without_the_auth_string(tmp_path):
    port = free_port()
    with prefect_server(tmp_path / "prefect", port, PREFECT_SERVER_API_AUTH_STRING="admin:team-secret") as api:
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client")}
        env.pop("PREFECT_API_AUTH_STRING", None)
        refused = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
        env["PREFECT_API_AUTH_STRING"] = "admin:team-secret"
        allowed = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=300)
        assert allowed.returncode == 0 and "result 42" in allowed.stdout, allowed.stderr[-2000:]


def test_make_never_prints_the_server_password(tmp_path):
    """The recipe runs with the password on its command line; make's own output never shows it."""
    fake = tmp_path / "venv"
    (fake / "bin").mkdir(parents=True)
    for tool in ("mlflow", "prefect"):
        script = fake / "bin" / tool
        script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/{tool}-args\n")
        script.chmod(0o755)
    (fake / ".installed").touch()  # `make setup` is satisfied by the stand-in environment
    os.utime(fake / ".installed", (4_000_000_000, 4_000_000_000))
    secret = "S3cret-In-The-Url"
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": secret, "PREFECT_SERVER_API_AUTH_STRING": f"admin:{secret}"}
    for target in ("mlflow-server", "prefect-server"):
        done = subprocess.run(["make", "-C", str(REPO), target, f"VENV={fake}",
                               f"MLFLOW_BACKEND=postgresql://mlflow:{secret}@db:5432/mlflow"],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert secret not in done.stdout + done.stderr
    args = Path(tmp_path / "mlflow-args").read_text()
    assert secret in args and "--app-name basic-auth" in args  # the server got it; the terminal did not
