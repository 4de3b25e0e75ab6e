"""Deploy the pipeline and sweep flows on a schedule from params (``orchestration.cron``).

    python -m flows.deploy serve                 # one machine: this process schedules and runs the flows
    python -m flows.deploy pool                  # register with the work pool `orchestration.work_pool`
    python -m flows.deploy pool --pool segpipe-gpu --gpu 0   # a GPU pool: runs see only GPU 0, device cuda

``serve`` runs the flows in this project folder, one run of each at a time (a run that comes due while another
runs waits for it). ``pool`` registers deployments whose code is the project's git remote: every run clones it
(the branch, or ``--commit``) into a folder of its own on whichever worker picks it up, so workers on other
machines need only the environment (``prefect worker start --pool <pool>``), never this folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.runner.storage import GitRepository
from prefect.schedules import Cron

from flows.pipeline import segmentation_pipeline
from flows.sweep import segmentation_sweep
from segpipe.checkout import code_version
from segpipe.errors import SegpipeError
from segpipe.params import load_params
from segpipe.stage import telemetry_off

PIPELINE_ENTRYPOINT = "flows/pipeline.py:segmentation_pipeline"
SWEEP_ENTRYPOINT = "flows/sweep.py:segmentation_sweep"
WORKER_STATE_DIR = "~/.segpipe"  # on each worker: the MLflow outbox outlives the run's checkout there
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def _schedule(project: Path) -> Cron:
    orchestration = load_params(project / "params.yaml").orchestration
    return Cron(orchestration.cron, timezone=orchestration.timezone)


def serve_deployments(project: Path, name: str) -> None:
    """Serve the scheduled pipeline and an unscheduled sweep from this process until it is stopped; runs share
    the project folder, so each deployment runs one at a time and the next waits in the queue."""
    schedule = _schedule(project)
    pipeline = segmentation_pipeline.to_deployment(name=name, schedule=schedule, concurrency_limit=ONE_AT_A_TIME,
                                                   parameters={"project": str(project)})
    sweep = segmentation_sweep.to_deployment(name=name, concurrency_limit=ONE_AT_A_TIME,
                                             parameters={"project": str(project)})
    serve(pipeline, sweep)


@dataclass(frozen=True)
class CodeSource:
    """Where the workers fetch the code: a git URL at a pinned ``commit``, or at the tip of ``branch`` when each
    run starts."""

    url: str
    branch: str | None
    commit: str | None

    def repository(self) -> GitRepository:
        return GitRepository(url=self.url, branch=self.branch, commit_sha=self.commit)

    def published(self) -> str:
        """The commit that the branch (or the pinned commit) names on the remote, checked before registering."""
        if self.commit:
            return self.commit
        listed = subprocess.run(["git", "ls-remote", self.url, f"refs/heads/{self.branch}"], capture_output=True,
                                text=True, timeout=120)
        if listed.returncode != 0 or not listed.stdout.strip():
            raise SegpipeError(f"branch {self.branch} is not on {self.url}: push it first (`git push origin "
                               f"{self.branch}`), workers only see what the remote holds")
        return listed.stdout.split()[0]


def git_source(project: Path, repository: str | None, branch: str | None, commit: str | None) -> CodeSource:
    """Where the workers fetch the code: ``repository`` (default: the project's git remote ``origin``) at
    ``commit``, or at the tip of ``branch`` (default: the project's branch) when each run starts."""
    here = code_version(project)
    url = repository or here.remote
    if not url:
        raise SegpipeError(f"{project} has no git remote 'origin': workers fetch the code from git, so push the "
                           f"project to a repository they reach (`git remote add origin URL` and `git push`) or "
                           f"pass --repository URL")
    branch = branch or here.branch
    if not (branch or commit):
        raise SegpipeError(f"{project} is on no branch (detached HEAD): pass --branch NAME or --commit SHA")
    return CodeSource(url=url, branch=branch, commit=commit)


def deploy_to_pool(project: Path, name: str, pool: str, gpu: str | None, source: CodeSource,
                   state_dir: str = WORKER_STATE_DIR) -> str:
    """Register both flows with a process work pool, their code fetched from ``source`` by each run; with ``gpu``,
    runs see that GPU and use base.device cuda. Returns what the runs check out."""
    schedule = _schedule(project)
    job_variables: dict = {}  # no working_dir: each run gets a fresh folder on its worker and clones there
    overrides = {}
    if gpu is not None:
        job_variables["env"] = {"CUDA_VISIBLE_DEVICES": gpu}
        overrides = {"base.device": "cuda"}
    checks_out = source.published()
    for flow, entrypoint, extra in ((segmentation_pipeline, PIPELINE_ENTRYPOINT,
                                     {"overrides": overrides, "state_dir": state_dir}),
                                    (segmentation_sweep, SWEEP_ENTRYPOINT, {})):
        flow.from_source(source=source.repository(), entrypoint=entrypoint).deploy(
            name=name, work_pool_name=pool, job_variables=job_variables,
            schedule=schedule if flow is segmentation_pipeline else None,
            parameters={"project": ".", **extra}, build=False, push=False, print_next_steps=False)
    pinned = f"commit {checks_out}" if source.commit else f"branch {source.branch} (now {checks_out[:12]})"
    return f"{source.url} at {pinned}"


def main(argv: list[str] | None = None) -> None:
    telemetry_off()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("mode", choices=["serve", "pool"],
                        help="serve: this process schedules and runs the flows; pool: register with a work pool")
    parser.add_argument("--project", default=".", help="project folder (holds params.yaml and dvc.yaml)")
    parser.add_argument("--name", default="segpipe", help="deployment name")
    parser.add_argument("--pool", default=None, help="work pool (default: orchestration.work_pool)")
    parser.add_argument("--gpu", default=None, help="GPU index for the runs of this pool (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--repository", default=None, help="pool: git URL the workers clone (default: origin)")
    parser.add_argument("--branch", default=None, help="pool: branch each run checks out (default: the current one)")
    parser.add_argument("--commit", default=None, help="pool: pin the runs to this commit instead of a branch tip")
    args = parser.parse_args(argv)
    project = Path(args.project).resolve()

    try:
        if args.mode == "serve":
            serve_deployments(project, args.name)
            return
        pool = args.pool or load_params(project / "params.yaml").orchestration.work_pool
        source = git_source(project, args.repository, args.branch, args.commit)
        where = deploy_to_pool(project, args.name, pool, args.gpu, source)
    except SegpipeError as exc:
        sys.exit(f"segpipe deploy: error: {exc}")
    print(f"deploy: segmentation-pipeline/{args.name} and segmentation-sweep/{args.name} on pool {pool}; "
          f"each run clones {where}")

if __name__ == "__main__":
    main()
