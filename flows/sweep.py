"""The ``segmentation-sweep`` flow: grid, random or Bayesian (Optuna TPE) search over dotted params keys.

Each trial is a DVC experiment (``dvc exp run -S ... -n <sweep>-<i>``) and an MLflow child run under one parent
run. Optuna's TPE is the Bayesian method: it handles categorical keys (``model.name``) and log-scaled ranges
together, works with a handful of trials, runs in-process with no server, and its ask/tell interface lets
our own trial runner (DVC) do the training.

The flow only orchestrates: what to try next is :mod:`segpipe.sweep.search`, one trial is
:mod:`flows.sweep_trial`, the ranking and summary are :mod:`segpipe.sweep.report`, and every MLflow call goes
through :mod:`segpipe.tracking` (so the sweep's records survive an outage of the server like the stages' do).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.sweep_trial import run_trial
from segpipe import tracking
from segpipe.errors import SegpipeError
from segpipe.fsutil import working_directory, write_json
from segpipe.overrides import ParamsGuard, apply_overrides, dvc_set_args
from segpipe.params import Params, SweepParams, load_params, parse_params
from segpipe.sweep.report import arm_table, reported_test_metric, summary_markdown, summary_table
from segpipe.sweep.search import Batch, search
from segpipe.tasks import get_task


@flow(name="segmentation-sweep", log_prints=True)
def segmentation_sweep(project: str = ".", method: str | None = None, space: dict[str, Any] | None = None,
                       trials: int | None = None, concurrency: int | None = None,
                       results: str | None = None) -> dict[str, Any]:
    """Run the sweep from params (``orchestration.sweep``), any argument given here overriding it."""
    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    given = {k: v for k, v in {"method": method, "space": space, "trials": trials, "concurrency": concurrency,
                               "results": results}.items() if v is not None}
    sweep = SweepParams.model_validate({**params.orchestration.sweep.model_dump(), **given})
    if sweep.objective is None:  # the task's own, on validation: val_miou, val_mask_ap, val_pq
        sweep = sweep.model_copy(update={"objective": f"val_{get_task(params.task).objective}"})
    if not params.tracking.enabled or not sweep.space:
        raise SegpipeError("a sweep needs tracking.enabled: true and a non-empty orchestration.sweep.space")
    guard = ParamsGuard(root / "params.yaml")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with working_directory(root):
        parent = tracking.server_run_id(tracking.start_run(params, "sweep", run_name=f"sweep-{stamp}")) or ""
        uri = tracking.tracking_uri(params.tracking)
    try:
        results = _run_trials(root, sweep, parent, stamp, params.base.seed, uri, guard,
                              params.orchestration.timeout_seconds)
    finally:
        restored = guard.restore()
        if restored:
            print(restored)
    table = summary_table(results, sweep)
    best = table[0]
    best_command = f"dvc exp run {' '.join(dvc_set_args(best['overrides']))}  # or: dvc exp apply {best['name']}"
    arms = arm_table(results, sweep)
    markdown = summary_markdown(table, sweep, best_command, arms)
    if sweep.results:
        write_json(root / sweep.results, {"objective": sweep.objective, "method": sweep.method, "space": {
            k: v if isinstance(v, list) else v.model_dump() for k, v in sweep.space.items()},
            "arms": arms, "trials": results})
    create_markdown_artifact(markdown, key="segmentation-sweep", description="trials sorted by the objective")
    with working_directory(root):  # the default tracking store is a file of the project
        _finish_parent(params, root, parent, table, markdown, sweep)
    test = reported_test_metric(sweep.objective)
    print(f"chosen on {sweep.objective}: trial {best['name']} ({sweep.objective} "
          f"{best['metrics'].get(sweep.objective)}, {test} {best['metrics'].get(test)}): {best_command}")
    return {"parent_run_id": parent, "trials": table, "arms": arms, "best_command": best_command}


def _run_trials(root: Path, sweep: SweepParams, parent: str, stamp: str, seed: int,
                uri: str, guard: ParamsGuard, timeout: float) -> list[dict[str, Any]]:
    """The search's trials, each batch validated first and run at once as Prefect tasks (in their own folders,
    ``dvc exp run --temp``, when more than one runs at a time)."""
    temp = sweep.concurrency > 1
    started = 0

    def launch(batch: Batch) -> list[dict[str, Any]]:
        nonlocal started
        for overrides in batch:  # validate first: a bad value fails before any training
            check_overrides(guard.original, overrides)
        guard.check(f"trial {started}")
        futures = [run_trial.submit(str(root), f"sweep-{stamp}-{started + i}", o, parent, temp, uri, timeout)
                   for i, o in enumerate(batch)]
        started += len(batch)
        try:
            return [f.result() for f in futures]
        finally:
            guard.trial_done()

    return search(sweep, seed, launch)


def check_overrides(params_text: str, overrides: dict[str, Any]) -> None:
    """Validate a trial's overrides against the sweep's params without changing any file."""
    parse_params(apply_overrides(yaml.safe_load(params_text), overrides), "sweep trial")


def _finish_parent(params: Params, root: Path, parent: str, table: list[dict[str, Any]], markdown: str,
                   sweep: SweepParams) -> None:
    """Close the sweep's parent run: a child run for every trial DVC restored from its cache, the summary, the
    chosen trial's metrics (its test metric reported, never chosen on) and the method."""
    if not parent:
        return
    for row in table:
        tracking.log_restored_trial(params, parent, row["name"], row["overrides"], row["metrics"])
    summary = root / ".segpipe" / "sweep_summary.md"
    summary.parent.mkdir(exist_ok=True)
    summary.write_text(markdown)
    tracking.log_artifacts(params, parent, [summary])
    best = {f"best_{key}": table[0]["metrics"][key] for key in {sweep.objective, reported_test_metric(sweep.objective)}
            if table[0]["metrics"].get(key) is not None}
    tracking.log_metrics(params, parent, best)
    tracking.log_params(params, parent, {"sweep.method": sweep.method})
    tracking.finish(params, parent)


if __name__ == "__main__":
    segmentation_sweep()
