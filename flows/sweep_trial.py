"""One sweep trial: a DVC experiment (``dvc exp run -n <name> -S ...``) run as a Prefect task, whose train stage
opens an MLflow child run under the sweep's parent run, and the metrics DVC recorded for it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from flows.pipeline import stage_environment
from segpipe.errors import SegpipeError
from segpipe.overrides import dvc_set_args
from segpipe.paths import METRICS, PRETRAIN_SUMMARY, TRAIN_SUMMARY
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
    return {"name": name, "overrides": overrides, "metrics": trial_metrics(Path(project), name),
            "seconds": round(time.time() - started, 1)}
