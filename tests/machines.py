"""Simulated machines on this host for tests and benchmarks of team runs: each has its own folder, HOME, caches,
temporary folder and Prefect worker, and shares only what real machines share — a bare git repository as the
code's remote, a DVC remote on S3 (moto's server on loopback), one Prefect server and one MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from segpipe.params import Params
from tests.conftest import new_project, sh
from tests.servers import bin_path, free_port, mlflow_server, prefect_server, s3_server, stop

POOL = "segpipe-team"
BUCKET = "segpipe-team"
DEPLOYMENT = "segmentation-pipeline/team"
# what one machine's environment never carries over to another: servers, state, caches and credentials
PER_MACHINE = ("HOME", "TMPDIR", "PYTHONPATH", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME",
               "SEGPIPE_STATE_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")


@dataclass
class Machine:
    name: str
    root: Path
    env: dict[str, str]

    @property
    def tmp(self) -> Path:
        """Where the machine's flow runs get their checkouts (its TMPDIR)."""
        return self.root / "tmp"

    @property
    def worker_log(self) -> str:
        path = self.root / "worker.log"
        return path.read_text() if path.is_file() else ""

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd or self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    @contextmanager
    def worker(self) -> Iterator[None]:
        """A process worker of the team pool on this machine, taking one run at a time."""
        with open(self.root / "worker.log", "a") as log:
            process = subprocess.Popen([bin_path("prefect"), "worker", "start", "--pool", POOL, "--name", self.name,
                                        "--limit", "1"], cwd=self.root, env=self.env, stdout=log, stderr=log,
                                       start_new_session=True)
        try:
            yield
        finally:
            stop(process)


def new_machine(root: Path, name: str, shared: dict[str, str]) -> Machine:
    """A machine folder with its own HOME, caches and TMPDIR, the installed environment on PATH, the team's
    ``shared`` settings, and no git identity: nobody configured one there."""
    folder = root / name
    for sub in ("home", "tmp"):
        (folder / sub).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE and not k.startswith(("GIT_", "AWS_"))}
    env.update(HOME=str(folder / "home"), TMPDIR=str(folder / "tmp"), PREFECT_HOME=str(folder / "home/.prefect"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PREFECT_WORKER_QUERY_SECONDS="2", **shared)
    return Machine(name, folder, env)


@dataclass
class Team:
    """The servers, the laptop that registered the deployments, and the team repository's remote and commit."""

    root: Path
    shared: dict[str, str]
    laptop: Machine
    origin: Path
    commit: str
    deployed: str  # what `flows.deploy pool` printed

    def machine(self, name: str) -> Machine:
        return new_machine(self.root, name, self.shared)

    def api(self, method: str, path: str, body: dict | None = None):
        response = httpx.request(method, self.shared["PREFECT_API_URL"] + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def start_runs(self, *overrides: dict) -> list[str]:
        """One run of the pipeline deployment per overrides dict; returns the flow run ids."""
        deployment = self.api("GET", f"/deployments/name/{DEPLOYMENT}")
        return [self.api("POST", f"/deployments/{deployment['id']}/create_flow_run",
                         {"parameters": {"overrides": o}})["id"] for o in overrides]

    def wait_for(self, run_ids: list[str], timeout: float = 1200) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [self.api("GET", f"/flow_runs/{run_id}") for run_id in run_ids]
            if all(run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for run in runs):
                return runs
            time.sleep(2)
        raise TimeoutError(f"flow runs {run_ids} did not finish in {timeout} s")

    def run_and_time(self, *overrides: dict) -> tuple[list[dict], float]:
        """Start runs with ``overrides`` at once and wait for all; returns them and the wall time in seconds."""
        started = time.monotonic()
        runs = self.wait_for(self.start_runs(*overrides))
        return runs, time.monotonic() - started

    def sweep(self, space: dict, concurrency: int = 2, study: str = "segpipe-sweep") -> tuple[dict, list[dict], float]:
        """A sweep over ``space`` run on the laptop, ``concurrency`` trials at a time on the pool's workers; returns
        its result, the pipeline runs its trials were and the wall time in seconds."""
        deployment = self.api("GET", f"/deployments/name/{DEPLOYMENT}")["id"]
        query = {"deployments": {"id": {"any_": [deployment]}}}
        before = {run["id"] for run in self.api("POST", "/flow_runs/filter", query)}
        code = ("import json; from flows.sweep import segmentation_sweep; "
                f"print('RESULT', json.dumps(segmentation_sweep(deployment={DEPLOYMENT!r}, "
                f"concurrency={concurrency}, space={space!r}, study={study!r})))")
        started = time.monotonic()
        done = self.laptop.run(sys.executable, "-c", code, cwd=self.laptop.root / "segpipe", timeout=1500)
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
        runs = [run for run in self.api("POST", "/flow_runs/filter", query) if run["id"] not in before]
        return result, runs, seconds

    def logs(self, run_id: str) -> str:
        query = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        pages = [self.api("POST", "/logs/filter", {**query, "offset": offset}) for offset in (0, 200, 400)]
        return "\n".join(log["message"] for page in pages for log in page)


def team_repository(laptop: Machine, s3: str, params: Params) -> tuple[Path, Path, str]:
    """The project with ``params`` and its DVC remote on the S3 server, committed and pushed to a bare git
    repository; returns the laptop's clone, the remote and the commit."""
    origin = laptop.root.parent / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    project = new_project(laptop.root / "segpipe", params)
    sh(project, "dvc", "remote", "add", "-d", "team", f"s3://{BUCKET}/dvc")
    sh(project, "dvc", "remote", "modify", "team", "endpointurl", s3)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "team project")
    sh(project, "git", "branch", "-M", "main")
    sh(project, "git", "remote", "add", "origin", str(origin))
    sh(project, "git", "push", "-q", "origin", "main")
    return project, origin, sh(project, "git", "rev-parse", "HEAD").strip()


@contextmanager
def team(root: Path, params: Params) -> Iterator[Team]:
    """Servers on loopback, the team repository, the work pool and the pipeline deployment from git."""
    with ExitStack() as servers:
        prefect_api = servers.enter_context(prefect_server(root / "prefect-server", free_port()))
        mlflow_uri = servers.enter_context(mlflow_server(root / "mlflow-server", free_port()))
        s3 = servers.enter_context(s3_server(root / "s3", free_port(), BUCKET))
        shared = {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_uri, "AWS_DEFAULT_REGION": "us-east-1",
                  "AWS_ACCESS_KEY_ID": "team-key", "AWS_SECRET_ACCESS_KEY": "team-secret"}
        laptop = new_machine(root, "laptop", shared)
        project, origin, commit = team_repository(laptop, s3, params)
        created = laptop.run("prefect", "work-pool", "create", POOL, "--type", "process")
        assert created.returncode == 0, created.stderr
        deployed = laptop.run(sys.executable, "-m", "flows.deploy", "pool", "--pool", POOL, "--name", "team",
                              cwd=project)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        yield Team(root, shared, laptop, origin, commit, deployed.stdout)
