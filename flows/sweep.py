"""The ``segmentation-sweep`` flow: grid, random or Bayesian (Optuna TPE) search over dotted params keys.

Each trial is a DVC experiment (``dvc exp run -S ... -n <sweep>-<i>``) and an MLflow child run under one parent
run. Optuna's TPE is the Bayesian method: it handles categorical keys (``model.name``) and log-scaled ranges
together, works with a handful of trials, runs in-process with no server, and its ask/tell interface lets
our own trial runner (DVC) do the training.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import stage_environment
from segpipe import tracking
from segpipe.config import Params, RangeSpec, SweepParams, load_params, parse_params
from segpipe.errors import SegpipeError
from segpipe.fsutil import working_directory, write_json
from segpipe.overrides import ParamsGuard, apply_overrides, dvc_set_args
from segpipe.tasks import get_task
from segpipe.tracking.outbox import STATE_ENV

SEED_KEY = "base.seed"  # trials that differ only in it are one arm of an experiment


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the listed values."""
    keys = list(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]


def _draw(rng: random.Random, spec: list[Any] | RangeSpec) -> Any:
    if isinstance(spec, list):
        return rng.choice(spec)
    if spec.log:
        value = 10 ** rng.uniform(math.log10(spec.low), math.log10(spec.high))
    else:
        value = rng.uniform(spec.low, spec.high)
    return round(value) if spec.integer else value


def random_trials(space: dict[str, list[Any] | RangeSpec], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{key: _draw(rng, spec) for key, spec in space.items()} for _ in range(count)]


def optuna_distributions(space: dict[str, list[Any] | RangeSpec]) -> dict[str, Any]:
    import optuna

    out = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            out[key] = optuna.distributions.CategoricalDistribution(spec)
        elif spec.integer:
            out[key] = optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        else:
            out[key] = optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log)
    return out


def _trial_metrics(project: Path, name: str) -> dict[str, float]:
    """The metrics DVC recorded for experiment ``name`` (``dvc exp show --json``): the validation metrics of the
    epoch training kept (``val_*``, what the sweep selects on), the test metrics (``test_*``, reported only) and
    the pretraining's."""
    done = subprocess.run(["dvc", "exp", "show", "--json"], cwd=project, env=stage_environment(), capture_output=True,
                          text=True, check=True)
    for commit in json.loads(done.stdout):
        for exp in commit.get("experiments") or []:
            for revision in exp.get("revs", []):
                if revision.get("name") == name:
                    files = (revision.get("data") or {}).get("metrics", {})
                    test = files.get("reports/metrics.json", {}).get("data", {}).get("test", {})
                    kept = files.get("reports/train.json", {}).get("data", {})
                    pretrain = files.get("reports/pretrain.json", {}).get("data", {})
                    metrics = {k: v for k, v in kept.items() if _is_number(v)}
                    metrics |= {f"test_{k}": v for k, v in test.items() if _is_number(v)}
                    if pretrain.get("enabled"):  # the pretraining this trial fine-tuned from (or could have)
                        metrics |= {f"pretrain_{k}": v for k, v in pretrain.items() if _is_number(v)}
                    return metrics
    raise SegpipeError(f"experiment {name} has no metrics in `dvc exp show`")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@task(task_run_name="{name}")
def run_trial(project: str, name: str, overrides: dict[str, Any], parent_run: str, temp: bool,
              tracking_uri: str, timeout: float = 86400) -> dict[str, Any]:
    """One trial: a DVC experiment whose train stage opens an MLflow run under ``parent_run``; killed as hung after
    ``timeout`` seconds."""
    env = {**stage_environment(), "SEGPIPE_PARENT_RUN_ID": parent_run, "SEGPIPE_TRIAL": name,
           "MLFLOW_TRACKING_URI": tracking_uri,
           STATE_ENV: str(Path(project).resolve() / ".segpipe")}  # a --temp trial's queued calls outlive its folder
    command = ["dvc", "exp", "run", "-n", name, *(["--temp"] if temp else []), *dvc_set_args(overrides)]
    started = time.time()
    try:
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SegpipeError(f"trial {name} still ran after {timeout:.0f} s (orchestration.timeout_seconds) and was "
                           f"killed as hung") from None
    get_run_logger().info("%s", (done.stdout + done.stderr).strip()[-3000:])
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if ": error:" in line]
        raise SegpipeError(f"trial {name} failed: {errors[-1] if errors else done.stderr.strip()[-500:]}")
    return {"name": name, "overrides": overrides, "metrics": _trial_metrics(Path(project), name),
            "seconds": round(time.time() - started, 1)}


def summary_table(results: list[dict[str, Any]], sweep: SweepParams) -> list[dict[str, Any]]:
    """Trials sorted best first by the objective."""
    reverse = sweep.direction == "maximize"
    missing = float("-inf") if reverse else float("inf")
    return sorted(results, key=lambda r: r["metrics"].get(sweep.objective, missing), reverse=reverse)


def arm_table(results: list[dict[str, Any]], sweep: SweepParams) -> list[dict[str, Any]]:
    """With ``base.seed`` in the space, the trials that differ only in it pooled into arms, in the order the trials
    ran: the objective's values, mean and sample standard deviation (0 for one seed), and the mean pretraining
    seconds if any. No arms otherwise."""
    if SEED_KEY not in sweep.space:
        return []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        arm = {k: v for k, v in row["overrides"].items() if k != SEED_KEY}
        groups.setdefault(json.dumps(arm, sort_keys=True), []).append(row)
    table = []
    for rows in groups.values():
        values = [row["metrics"].get(sweep.objective, float("nan")) for row in rows]
        seconds = [row["metrics"]["pretrain_seconds"] for row in rows if "pretrain_seconds" in row["metrics"]]
        table.append({"arm": {k: v for k, v in rows[0]["overrides"].items() if k != SEED_KEY},
                      "seeds": [row["overrides"][SEED_KEY] for row in rows], "values": values,
                      "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                      "pretrain_seconds": statistics.fmean(seconds) if seconds else None})
    return table


def reported_test_metric(objective: str) -> str:
    """The test metric reported beside a validation objective (``val_miou`` -> ``test_miou``)."""
    return "test_" + objective.removeprefix("val_").removeprefix("test_")


def summary_markdown(table: list[dict[str, Any]], sweep: SweepParams, best_command: str,
                     arms: list[dict[str, Any]]) -> str:
    """The trials ranked by the objective, with the test metric each one reached (reported, never used to rank),
    then (when base.seed is swept) each arm's mean and std over seeds."""
    keys, test = list(sweep.space), reported_test_metric(sweep.objective)
    shown = [sweep.objective] if test == sweep.objective else [sweep.objective, test]
    head = "| rank | trial | " + " | ".join(keys + shown) + " | seconds |"
    lines = [head, "|" + "---|" * (len(keys) + len(shown) + 3)]
    for rank, row in enumerate(table, 1):
        values = " | ".join(str(row["overrides"][k]) for k in keys)
        scores = " | ".join(f"{row['metrics'].get(key, float('nan')):.4f}" for key in shown)
        lines.append(f"| {rank} | {row['name']} | {values} | {scores} | {row['seconds']} |")
    best = table[0]["metrics"]
    chosen = ", ".join(f"{key} {best.get(key, float('nan')):.4f}" for key in shown)
    text = (f"# sweep ({sweep.method}, {len(table)} trials, selected on {sweep.objective})\n\n" + "\n".join(lines)
            + f"\n\nChosen: {table[0]['name']} ({chosen}): `{best_command}`\n")
    if arms:
        arm_keys = [k for k in keys if k != SEED_KEY]
        lines = ["| " + " | ".join(arm_keys) + f" | seeds | {sweep.objective} mean ± std |",
                 "|" + "---|" * (len(arm_keys) + 2)]
        lines += ["| " + " | ".join(str(a["arm"][k]) for k in arm_keys)
                  + f" | {len(a['seeds'])} | {a['mean']:.4f} ± {a['std']:.4f} |" for a in arms]
        text += "\n## arms (mean over seeds)\n\n" + "\n".join(lines) + "\n"
    return text


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
    temp = sweep.concurrency > 1  # trials at once need their own folders: dvc exp run --temp
    results: list[dict[str, Any]] = []

    def launch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for overrides in batch:  # validate first: a bad value fails before any training
            check_overrides(guard.original, overrides)
        guard.check(f"trial {len(results)}")
        start = len(results)
        futures = [run_trial.submit(str(root), f"sweep-{stamp}-{start + i}", o, parent, temp, uri, timeout)
                   for i, o in enumerate(batch)]
        try:
            return [f.result() for f in futures]
        finally:
            guard.trial_done()

    if sweep.method == "bayes":
        import optuna

        study = optuna.create_study(direction=sweep.direction, sampler=optuna.samplers.TPESampler(seed=seed))
        distributions = optuna_distributions(sweep.space)
        while len(results) < sweep.trials:
            asked = [study.ask(distributions) for _ in range(min(sweep.concurrency, sweep.trials - len(results)))]
            for trial, result in zip(asked, launch([t.params for t in asked]), strict=True):
                study.tell(trial, result["metrics"].get(sweep.objective))
                results.append(result)
        return results
    candidates = grid(sweep.space) if sweep.method == "grid" else random_trials(sweep.space, sweep.trials, seed)
    for begin in range(0, len(candidates), sweep.concurrency):
        results += launch(candidates[begin:begin + sweep.concurrency])
    return results


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
