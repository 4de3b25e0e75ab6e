"""One sweep trial as a Prefect task: on this machine a DVC experiment (``dvc exp run -n <name> -S ...``), on a work
pool a run of the pipeline deployment. Either way its train stage opens an MLflow child run under the sweep's
parent run and reports each epoch to the trial in the study."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.deployments import run_deployment

from flows.child_processes import stream_logged
from flows.pipeline import stage_environment
from segpipe.errors import SegpipeError
from segpipe.overrides import dvc_set_args
from segpipe.paths import METRICS, PRETRAIN_SUMMARY, TRAIN_SUMMARY
from segpipe.sweep.study import STORAGE_ENV
from segpipe.tracking.outbox import STATE_ENV


def trial_metrics(project: Path, name: str) -> dict[str, float]:
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
                    test = files.get(METRICS.as_posix(), {}).get("data", {}).get("test", {})
                    kept = files.get(TRAIN_SUMMARY.as_posix(), {}).get("data", {})
                    pretrain = files.get(PRETRAIN_SUMMARY.as_posix(), {}).get("data", {})
                    metrics = {k: v for k, v in kept.items() if _is_number(v)}
                    metrics |= {f"test_{k}": v for k, v in test.items() if _is_number(v)}
                    if pretrain.get("enabled"):  # the pretraining this trial fine-tuned from (or could have)
                        metrics |= {f"pretrain_{k}": v for k, v in pretrain.items() if _is_number(v)}
                    return metrics
    raise SegpipeError(f"experiment {name} has no metrics in `dvc exp show`")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrialRun:
    """What a trial's run needs besides its overrides: the Optuna trial it reports to (``study``, ``number``, the
    storage URL), the sweep's MLflow parent run and tracking URI, and the time after which it is hung."""

    name: str
    study: str
    number: int
    storage: str
    parent_run: str
    tracking_uri: str
    timeout: float = 86400

    def overrides(self, space_values: dict[str, Any]) -> dict[str, Any]:
        """The run's params overrides: the trial's values and the trial the training reports to."""
        return {**space_values, "train.trial.study": self.study, "train.trial.number": self.number}

    def environment(self) -> dict[str, str]:
        """The variables that the trial's stages read: the MLflow parent and trial name, the study's storage."""
        return {"SEGPIPE_PARENT_RUN_ID": self.parent_run, "SEGPIPE_TRIAL": self.name,
                "MLFLOW_TRACKING_URI": self.tracking_uri, STORAGE_ENV: self.storage}


@task(task_run_name="{trial.name}")
def run_local_trial(project: str, trial: TrialRun, values: dict[str, Any], temp: bool) -> dict[str, Any]:
    """One trial on this machine: a DVC experiment (in a temporary copy when ``temp``) whose train stage opens an
    MLflow run under the sweep's parent run and reports its epochs to the study."""
    env = {**stage_environment(), **trial.environment(),
           STATE_ENV: str(Path(project).resolve() / ".segpipe")}  # a --temp trial's queued calls outlive its folder
    command = ["dvc", "exp", "run", "-n", trial.name, *(["--temp"] if temp else []),
               *dvc_set_args(trial.overrides(values))]
    started = time.time()
    returncode, output, hung = stream_logged(command, project, env, trial.timeout)  # one line per epoch, live
    if hung:
        raise SegpipeError(f"trial {trial.name} still ran after {trial.timeout:.0f} s "
                           f"(orchestration.timeout_seconds) and was killed as hung")
    if returncode != 0:
        errors = [line for line in output.splitlines() if ": error:" in line]
        raise SegpipeError(f"trial {trial.name} failed: {errors[-1] if errors else output.strip()[-500:]}")
    return {"name": trial.name, "overrides": values, "metrics": trial_metrics(Path(project), trial.name),
            "seconds": round(time.time() - started, 1)}


@task(task_run_name="{trial.name}")
def run_pool_trial(deployment: str, trial: TrialRun, values: dict[str, Any]) -> dict[str, Any]:
    """One trial as a run of the pipeline ``deployment`` on its work pool: the worker that takes it clones the
    code, trains in a folder of its own and saves the run as DVC experiment ``trial.name``; the trial's metrics
    come back through the study (validation) and MLflow (test)."""
    started = time.time()
    run = run_deployment(deployment, parameters={
        "overrides": trial.overrides(values), "experiment_name": trial.name,
        "sweep_trial": {"environment": trial.environment()}}, timeout=trial.timeout)
    if not run.state or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise SegpipeError(f"trial {trial.name}: flow run {run.name} of {deployment} ended {state}: "
                           f"{(run.state.message if run.state else '') or 'see its logs'}")
    return {"name": trial.name, "overrides": values, "metrics": {}, "seconds": round(time.time() - started, 1)}
