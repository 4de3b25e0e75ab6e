"""Start and stop real servers (MLflow, Prefect) on loopback for tests, by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def mlflow_server(root: Path, port: int, backend: str | None = None,
                  admin: tuple[str, str] | None = None) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1:port with served artifacts under ``root`` (backend: SQLite there); with
    ``admin`` (user, password), MLflow's basic-auth app as ``make mlflow-server`` runs it."""
    root.mkdir(parents=True, exist_ok=True)
    command = [bin_path("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend or f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), *(["--app-name", "basic-auth"] if admin else [])]
    env = dict(os.environ)
    if admin:
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(Path(__file__).parents[1] / "segpipe/mlflow_auth.ini"),
                   MLFLOW_AUTH_ADMIN_USERNAME=admin[0], MLFLOW_AUTH_ADMIN_PASSWORD=admin[1],
                   MLFLOW_FLASK_SERVER_SECRET_KEY="tests-only-key")
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True, cwd=root)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@contextmanager
def prefect_server(home: Path, port: int, **settings: str) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1:port with its own PREFECT_HOME (SQLite) and extra ``settings``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", **settings}
    with open(home / "server.log", "ab") as log:
        process = subprocess.Popen([bin_path("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/health", process)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop(process)


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: then run its tools as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgres_cluster(port: int) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1:port (data in a temp dir, stopped by PID); yields its URL.

    The tools come from ``pg_config --bindir``; the database ``mlflow`` is created for the tracking server.
    """
    import shutil
    import tempfile

    bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    root = Path(tempfile.mkdtemp(prefix="segpipe-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, as_postgres = root / "data", _as_postgres()
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    log = open(root / "server.log", "ab")
    process = subprocess.Popen([*as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                                "-k", str(root), "-c", "listen_addresses=127.0.0.1"],
                               stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def s3_server(root: Path, port: int, bucket: str) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1:port (as dvc-s3's own tests use) with ``bucket`` created; yields its URL.
    Clients authenticate with any key pair (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "s3.log", "ab") as log:
        process = subprocess.Popen([bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                   stderr=log, start_new_session=True, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/moto-api/", process)
        request = urllib.request.Request(f"{url}/{bucket}", method="PUT")  # CreateBucket, unsigned: moto allows it
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        yield url
    finally:
        stop(process)


@contextmanager
def segpipe_server(project: Path, *args: str, log: Path | None = None) -> Iterator[str]:
    """``segpipe serve`` in ``project`` on a free loopback port with ``args``; yields its URL. Its output goes to
    ``log`` (default: ``project/serve.log``), which a failed start shows."""
    port = free_port()
    log = log or project / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "segpipe.cli", "serve", "--port", str(port), *args],
                                   cwd=project, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_healthy(f"{url}/health", process, timeout=120)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
            yield url
        finally:
            stop(process)
