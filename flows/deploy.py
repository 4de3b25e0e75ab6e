"""Deploy the pipeline and sweep flows on a schedule from params (``orchestration.cron``).

    python -m flows.deploy serve                 # one machine: this process schedules and runs the flows
    python -m flows.deploy pool                  # register with the work pool `orchestration.work_pool`
    python -m flows.deploy pool --pool segpipe-gpu --gpu 0   # a GPU pool: runs see only GPU 0, device cuda

With a pool, start workers where the runs should happen: ``prefect worker start --pool <pool>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from flows.pipeline import segmentation_pipeline
from flows.sweep import segmentation_sweep
from segpipe.params import load_params
from segpipe.stage import telemetry_off

PIPELINE_ENTRYPOINT = "flows/pipeline.py:segmentation_pipeline"
SWEEP_ENTRYPOINT = "flows/sweep.py:segmentation_sweep"


def _schedule(project: Path) -> Cron:
    orchestration = load_params(project / "params.yaml").orchestration
    return Cron(orchestration.cron, timezone=orchestration.timezone)


def serve_deployments(project: Path, name: str) -> None:
    """Serve the scheduled pipeline and an unscheduled sweep from this process until it is stopped."""
    schedule = _schedule(project)
    pipeline = segmentation_pipeline.to_deployment(name=name, schedule=schedule,
                                                   parameters={"project": str(project)})
    sweep = segmentation_sweep.to_deployment(name=name, parameters={"project": str(project)})
    serve(pipeline, sweep)


def deploy_to_pool(project: Path, name: str, pool: str, gpu: str | None) -> None:
    """Register both flows with a process work pool; with ``gpu``, runs see that GPU and use base.device cuda."""
    schedule = _schedule(project)
    job_variables = {"working_dir": str(project)}
    overrides = {}
    if gpu is not None:
        job_variables["env"] = {"CUDA_VISIBLE_DEVICES": gpu}
        overrides = {"base.device": "cuda"}
    for flow, entrypoint, extra in ((segmentation_pipeline, PIPELINE_ENTRYPOINT, {"overrides": overrides}),
                                    (segmentation_sweep, SWEEP_ENTRYPOINT, {})):
        flow.from_source(source=str(project), entrypoint=entrypoint).deploy(
            name=name, work_pool_name=pool, job_variables=job_variables,
            schedule=schedule if flow is segmentation_pipeline else None,
            parameters={"project": str(project), **extra}, build=False, push=False)


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
    args = parser.parse_args(argv)
    project = Path(args.project).resolve()
    if args.mode == "serve":
        serve_deployments(project, args.name)
    else:
        pool = args.pool or load_params(project / "params.yaml").orchestration.work_pool
        deploy_to_pool(project, args.name, pool, args.gpu)


if __name__ == "__main__":
    main()
