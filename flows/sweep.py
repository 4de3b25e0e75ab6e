"""The ``segmentation-sweep`` flow: grid, random or Bayesian (Optuna TPE) search over dotted params keys, with
pruning on the epoch curve.

The search state is an Optuna study in shared storage (a journal file, or a database for a team): the sweep asks
it for each trial, every trial's training reports its epochs to it and is stopped there by the study's pruner
(median, successive halving, hyperband), and a sweep run again with the same study name continues it. Each trial
is a DVC experiment and an MLflow child run under the sweep's parent run, run here (``dvc exp run``) or as a run
of the pipeline deployment on a work pool; a new trial starts whenever one ends, ``concurrency`` at a time.

The flow only orchestrates: what to try next is :mod:`segpipe.sweep.search`, the study :mod:`segpipe.sweep.study`,
one trial :mod:`flows.sweep_trial`, how each ended :mod:`segpipe.sweep.results`, the ranking and summary
:mod:`segpipe.sweep.report`, and every MLflow call goes through :mod:`segpipe.tracking` (so the sweep's records
survive an outage of the server like the stages' do).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, as_completed

from flows.child_processes import sigterm_exits, stops_reach_children
from flows.command_line import flow_parser
from flows.sweep_trial import TrialRun, run_local_trial, run_pool_trial
from segpipe import tracking
from segpipe.errors import SegpipeError
from segpipe.fsutil import working_directory, write_json
from segpipe.overrides import ParamsGuard, apply_overrides, dvc_set_args
from segpipe.params import Params, SweepParams, load_params, parse_params, read_yaml
from segpipe.sweep.report import (
    arm_table,
    compute_used,
    differences_text,
    paired_differences,
    reported_test_metric,
    summary_markdown,
    summary_table,
)
from segpipe.sweep.results import abandon_trials, recorded_test_metrics, settle_trial, study_results
from segpipe.sweep.search import TrialSource, finished_trials
from segpipe.sweep.study import open_study, storage_url
from segpipe.tasks import get_task


@flow(name="segmentation-sweep", log_prints=True)
def segmentation_sweep(project: str = ".", method: str | None = None, space: dict[str, Any] | None = None,
                       trials: int | None = None, concurrency: int | None = None, results: str | None = None,
                       pruner: str | None = None, study: str | None = None, deployment: str | None = None,
                       budget_minutes: float | None = None) -> dict[str, Any]:
    """Run the sweep from params (``orchestration.sweep``), any argument given here overriding it."""
    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    given = {k: v for k, v in {"method": method, "space": space, "trials": trials, "concurrency": concurrency,
                               "results": results, "pruner": pruner, "study": study,
                               "deployment": deployment, "budget_minutes": budget_minutes}.items() if v is not None}
    sweep = SweepParams.model_validate({**params.orchestration.sweep.model_dump(), **given})
    if sweep.objective is None:  # the task's own, on validation: val_miou, val_mask_ap, val_pq
        sweep = sweep.model_copy(update={"objective": f"val_{get_task(params.task).objective}"})
    if not params.tracking.enabled or not sweep.space:
        raise SegpipeError("a sweep needs tracking.enabled: true and a non-empty orchestration.sweep.space")
    deadline = _deadline(sweep)  # the budget counts from the sweep's start
    guard = ParamsGuard(root / "params.yaml")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with working_directory(root):
        uri = tracking.tracking_uri(params.tracking)
        if sweep.deployment and not uri.startswith("http"):
            raise SegpipeError(f"trials on a work pool record under the sweep's MLflow run, so the workers need its "
                               f"tracking server: set MLFLOW_TRACKING_URI to it (now {uri})")
        storage = storage_url(sweep.storage, root)
        optuna_study = open_study(sweep, storage, params.base.seed, _max_epochs(params, sweep))
        source = TrialSource(optuna_study, sweep, params.base.seed)
        for values in source.queue:  # validate first: a bad value fails before any training
            if values is not None:
                check_overrides(guard.original, values)
        print(f"study '{sweep.study}' in {storage}: {len(finished_trials(optuna_study))} finished trials; this run "
              f"adds {len(source)} ({sweep.method}, pruner {sweep.pruner}, {sweep.concurrency} at once"
              f"{f', on the workers of {sweep.deployment}' if sweep.deployment else ''}); optuna-dashboard {storage}")
        parent = tracking.server_run_id(tracking.start_run(params, "sweep", run_name=f"sweep-{stamp}")) or ""
    launch = _launcher(root, sweep, TrialRun("", sweep.study, 0, storage, parent, uri,
                                            params.orchestration.timeout_seconds), stamp, guard)
    try:
        with working_directory(root), stops_reach_children():  # tracking files are the project's; Ctrl-C stops trials
            ran = _run_trials(optuna_study, source, launch, guard, params, parent, deadline)
    finally:
        restored = guard.restore()
        if restored:
            print(restored)
    with working_directory(root):
        table = summary_table(study_results(optuna_study, params, ran), sweep)
    if not table or table[0]["state"] != "complete":
        with working_directory(root):
            tracking.finish(params, parent, "FAILED")
        raise SegpipeError(f"study '{sweep.study}' has no complete trial: see the failed trials' logs above")
    best, comparison = table[0], sweep.compares_arms
    best_command = None if comparison else \
        f"dvc exp run {' '.join(dvc_set_args(best['overrides']))}  # or: dvc exp apply {best['name']}"
    arms = arm_table(table, sweep)
    pairs = paired_differences(arms, sweep)
    compute = compute_used(table, params.train.epochs)
    markdown = summary_markdown(table, sweep, best_command, arms, compute, pairs)
    if sweep.results:
        write_json(root / sweep.results, {
            "objective": sweep.objective, "method": sweep.method, "pruner": sweep.pruner, "study": sweep.study,
            "space": {k: v if isinstance(v, list) else v.model_dump() for k, v in sweep.space.items()},
            "compute": compute, "arms": arms, "paired": pairs, "trials": table})
    create_markdown_artifact(markdown, key="segmentation-sweep", description="trials sorted by the objective")
    with working_directory(root):  # the default tracking store is a file of the project
        _finish_parent(params, root, parent, table, markdown, sweep, compute)
    if comparison:
        _print_comparison(sweep.objective, arms, pairs)
    else:
        test = reported_test_metric(sweep.objective)
        beside = f", {test} {best['metrics'].get(test)}" if test != sweep.objective else ""
        print(f"chosen on {sweep.objective}: trial {best['name']} ({sweep.objective} "
              f"{best['metrics'].get(sweep.objective)}{beside}): {best_command}")
    print(f"compute: {compute['trial_epochs']} of {compute['unpruned_trial_epochs']} trial-epochs "
          f"({compute['pruned_trials']} pruned)")
    return {"parent_run_id": parent, "trials": table, "arms": arms, "paired": pairs, "best_command": best_command,
            "compute": compute, "study": sweep.study, "storage": storage}


def _print_comparison(objective: str, arms: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> None:
    """An experiment's outcome: each arm over its seeds, and each paired difference (nothing is chosen)."""
    for arm in arms:
        print(f"arm {json.dumps(arm['arm'])}: {objective} {arm['mean']:.4f} ± {arm['std']:.4f} over seeds "
              f"{arm['seeds']}")
    for pair in pairs:
        print(f"paired: {json.dumps(pair['arm'])} minus {json.dumps(pair['reference'])}: {pair['mean']:+.4f} ± "
              f"{pair['std']:.4f} (seeds {pair['seeds']}: {differences_text(pair)})")
    if not arms:
        print(f"compared on {objective}; nothing is chosen (sweep base.seed to pool trials into arms)")


def _deadline(sweep: SweepParams) -> float | None:
    """The time after which this sweep run starts no trial (``orchestration.sweep.budget_minutes``)."""
    return time.monotonic() + 60 * sweep.budget_minutes if sweep.budget_minutes else None


def _max_epochs(params: Params, sweep: SweepParams) -> int | None:
    """The most epochs a trial runs (hyperband's top budget); None when the space sets train.epochs."""
    return None if "train.epochs" in sweep.space else params.train.epochs


Launch = Callable[[Any], PrefectFuture]


def _launcher(root: Path, sweep: SweepParams, base: TrialRun, stamp: str, guard: ParamsGuard) -> Launch:
    """How a trial starts: a run of ``sweep.deployment`` on its pool, or a DVC experiment here (in a temporary
    copy of the project when more than one runs at a time)."""

    def launch(trial: Any) -> PrefectFuture:
        run = replace(base, name=f"{sweep.study}-{trial.number}-{stamp}", number=trial.number)
        check_overrides(guard.original, run.overrides(trial.params))
        trial.set_user_attr("name", run.name)
        if sweep.deployment:
            return run_pool_trial.submit(sweep.deployment, run, trial.params)
        guard.check(f"trial {run.name}")
        return run_local_trial.submit(str(root), run, trial.params, sweep.concurrency > 1)

    return launch


def _run_trials(study: Any, source: TrialSource, launch: Launch, guard: ParamsGuard, params: Params,
                parent: str, deadline: float | None) -> dict[str, dict[str, Any]]:
    """Keep ``concurrency`` trials running, asking the study for the next one whenever one ends, until the
    ``deadline`` (``time.monotonic``) passes; return what each trial's run gave, by name. A failed trial is marked
    failed in the study and the sweep goes on."""
    in_flight: dict[PrefectFuture, Any] = {}
    ran: dict[str, dict[str, Any]] = {}
    while True:
        if deadline is not None and time.monotonic() > deadline and len(source):
            print(f"budget of {source.sweep.budget_minutes:g} min spent: {source.stop()} trials left, which the next "
                  f"run of study '{source.sweep.study}' runs")
        while len(in_flight) < source.sweep.concurrency:
            trial = source.ask()
            if trial is None:
                break
            in_flight[launch(trial)] = trial
        if not in_flight:
            return ran
        try:
            future = next(as_completed(list(in_flight)))
        except BaseException:  # Ctrl-C or kill, which stopped the local trials too: the study keeps none running
            if not source.sweep.deployment:  # a worker's run goes on, and tells the study itself
                abandon_trials(study, list(in_flight.values()))
            guard.trial_done()  # the stopped trial's values are still in params.yaml: the sweep puts it back
            raise
        trial = in_flight.pop(future)
        guard.trial_done()
        name = trial.user_attrs["name"]
        try:
            ran[name] = future.result()
        except Exception as exc:  # noqa: BLE001 - one trial's failure is recorded; the others go on
            print(f"trial {name} failed: {exc}")
        if name in ran and not ran[name]["metrics"]:  # a pool trial: its worker's run sent them to MLflow
            ran[name]["metrics"] = recorded_test_metrics(params, name)
        state = settle_trial(study, trial, ran.get(name), source.sweep.objective)
        if name in ran:  # a trial whose training DVC restored still gets a child run
            tracking.log_restored_trial(params, parent, name, trial.params, ran[name]["metrics"])
        tracking.tag_trial(params, parent, name, {"segpipe.study": source.sweep.study,
                                                  "segpipe.trial_number": str(trial.number),
                                                  "segpipe.trial_state": state})
        print(f"trial {name} ({json.dumps(trial.params)}): {state}")


def check_overrides(params_text: str, overrides: dict[str, Any]) -> None:
    """Validate a trial's overrides against the sweep's params without changing any file."""
    parse_params(apply_overrides(read_yaml(params_text), overrides), "sweep trial")


def _finish_parent(params: Params, root: Path, parent: str, table: list[dict[str, Any]], markdown: str,
                   sweep: SweepParams, compute: dict[str, Any]) -> None:
    """Close the sweep's parent run: the summary, the chosen trial's metrics (its test metric reported, never
    chosen on; none for an experiment on a test metric), the compute the trials used, the method, pruner and study."""
    if not parent:
        return
    summary = root / ".segpipe" / "sweep_summary.md"
    summary.parent.mkdir(exist_ok=True)
    summary.write_text(markdown)
    tracking.log_artifacts(params, parent, [summary])
    keys = set() if sweep.compares_arms else {sweep.objective, reported_test_metric(sweep.objective)}
    best = {f"best_{key}": table[0]["metrics"][key] for key in keys if table[0]["metrics"].get(key) is not None}
    tracking.log_metrics(params, parent, {**best, **compute})
    tracking.log_params(params, parent, {"sweep.method": sweep.method, "sweep.pruner": sweep.pruner,
                                         "sweep.study": sweep.study})
    tracking.finish(params, parent)


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.sweep [--budget-minutes M] ...``: the sweep of ``orchestration.sweep``, any option given
    overriding its setting for this run."""
    parser = flow_parser("flows.sweep", "Run the sweep of orchestration.sweep in params.yaml as a Prefect flow; a "
                                        "study run again with the same name continues where it stopped.")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="no trial starts after this many minutes (default: orchestration.sweep.budget_minutes)")
    parser.add_argument("--trials", type=int, default=None, help="trials of a random or bayes sweep")
    parser.add_argument("--concurrency", type=int, default=None, help="trials at once")
    parser.add_argument("--study", default=None, help="the study's name in its storage")
    args = parser.parse_args(argv)
    sigterm_exits()
    segmentation_sweep(project=args.project, budget_minutes=args.budget_minutes, trials=args.trials,
                       concurrency=args.concurrency, study=args.study)


if __name__ == "__main__":
    main()
