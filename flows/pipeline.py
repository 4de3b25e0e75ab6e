"""The ``segmentation-pipeline`` flow: the stages of dvc.yaml as Prefect tasks, in order.

DVC stays the judge of what is stale: each task runs ``dvc repro --single-item <stage>``, so a flow run gives
the same outputs and caching as ``dvc repro``. Overrides are dotted params keys; a run with overrides is saved
as a DVC experiment (``dvc exp save``), so it can be listed, compared and applied like any other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.child_processes import sigterm_exits, stops_reach_children, stream_logged
from flows.command_line import dotted_value, flow_parser
from segpipe import dvc_remote, tracking
from segpipe.checkout import CodeVersion, code_version, fallback_identity
from segpipe.dvc_remote import GIT_REMOTE
from segpipe.fsutil import working_directory
from segpipe.overrides import dvc_set_args, write_overrides
from segpipe.params import load_params
from segpipe.paths import EXPORT_REPORT, METRICS
from segpipe.stage import telemetry_off
from segpipe.tracking.outbox import STATE_ENV, Outbox


class StageFailed(RuntimeError):
    """A stage exited non-zero; ``user_error`` when it printed segpipe's one-line error (not worth a retry)."""

    def __init__(self, stage: str, message: str, user_error: bool) -> None:
        super().__init__(f"stage {stage} failed: {message}")
        self.user_error = user_error


def stage_environment() -> dict[str, str]:
    """The environment for dvc and the stages: telemetry off, this Python's tools first on PATH."""
    telemetry_off()
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def pipeline_stages(project: Path) -> list[str]:
    """The stages of the project's dvc.yaml, in the order they run (each depends on ones above it)."""
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def _failure(stage: str, output: str) -> StageFailed:
    ours = [line for line in output.splitlines() if line.startswith(f"segpipe {stage}: error:")]
    if ours:
        return StageFailed(stage, ours[-1], user_error=True)
    tail = [line for line in output.splitlines() if line.strip()][-3:]
    return StageFailed(stage, " | ".join(tail) or "no output", user_error=False)


def _retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    try:
        state.result()
    except StageFailed as exc:
        return not exc.user_error
    except Exception:  # noqa: BLE001 - anything else (killed worker, lost lock) may pass on a retry
        return True
    return False


@task(task_run_name="{stage}", retry_condition_fn=_retry_if_transient)
def run_stage(stage: str, project: str, timeout: float = 86400, pull: bool = False) -> str:
    """Run one stage through DVC, streaming its output into the task's log; returns 'ran', 'restored' (from the
    run cache: someone ran it with the same code, params and data) or 'up to date'. With ``pull``, the outputs of
    a restored stage come from the DVC remote. A stage still running after ``timeout`` seconds is killed as hung
    (orchestration.timeout_seconds)."""
    command = ["dvc", "repro", "--single-item", *(["--pull"] if pull else []), stage]
    returncode, output, hung = stream_logged(command, project, stage_environment(), timeout)
    if hung:
        raise StageFailed(stage, f"still running after {timeout:.0f} s (orchestration.timeout_seconds): killed as "
                                 f"hung; last output: {' | '.join(output.strip().splitlines()[-2:])}", user_error=False)
    if returncode != 0:
        raise _failure(stage, output)
    if f"Running stage '{stage}'" in output:
        return "ran"
    return "restored" if f"Stage '{stage}' is cached" in output else "up to date"


def read_results(project: Path) -> dict[str, Any]:
    """Final metrics, the MLflow run id and tracking URI written by the stages."""
    metrics = json.loads((project / METRICS).read_text())["test"]
    export = json.loads((project / EXPORT_REPORT).read_text())
    return {"metrics": metrics, "export": export, **tracking.recorded_run(project)}


def run_link(tracking_uri: str, run_id: str | None) -> str:
    if not run_id:
        return "not on the tracking server yet (see `segpipe sync-tracking`)"
    if tracking_uri.startswith("http"):
        return f"[{run_id}]({tracking_uri.rstrip('/')}/#/runs/{run_id})"
    return f"`{run_id}` in `{tracking_uri}` (open with `mlflow ui --backend-store-uri {tracking_uri}`)"


def _table(title: str, values: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v:.6g} |" for k, v in values.items()
                     if isinstance(v, int | float) and not isinstance(v, bool))
    return f"| {title} | value |\n|---|---|\n{rows}\n\n"


def markdown_report(results: dict[str, Any], stages: dict[str, str], overrides: dict[str, Any],
                    code: CodeVersion) -> str:
    """The flow run's artifact: the code's commit, the MLflow run, overrides, test metrics, the export's parity
    check, stages."""
    stage_rows = "\n".join(f"| {k} | {v} |" for k, v in stages.items())
    return (f"# segmentation pipeline\n\nCode: {code.describe()}\n\n"
            f"MLflow run: {run_link(results['tracking_uri'], results['mlflow_run_id'])}\n\n"
            f"Overrides: `{json.dumps(overrides)}`\n\n{_table('test metric', results['metrics'])}"
            f"{_table('ONNX export check', results['export'])}| stage | status |\n|---|---|\n{stage_rows}\n")


def save_experiment(root: Path, overrides: dict[str, Any], name: str | None, remote: str | None) -> None:
    """Save the run with ``overrides`` as a DVC experiment, and push it to the git remote when there is a DVC
    remote (``dvc exp list origin`` in any clone shows it)."""
    name = name or "flow-" + "-".join(f"{k.split('.')[-1]}{v}" for k, v in overrides.items())[:60]
    saved = subprocess.run(["dvc", "exp", "save", "--force", "-n", name], cwd=root,
                           env={**stage_environment(), **fallback_identity(root)}, capture_output=True, text=True)
    how = f"dvc exp run {' '.join(dvc_set_args(overrides))}"
    if saved.returncode != 0:  # the run itself succeeded; say why it is not an experiment (e.g. no git commit yet)
        print(f"not saved as a DVC experiment ({saved.stderr.strip().splitlines()[-1:]}); reproduce with: {how}")
        return
    print(f"saved as DVC experiment {name}; reproduce with: {how}")
    if remote:
        print(f"experiment {name} pushed to {GIT_REMOTE} and DVC remote '{remote}': "
              f"{dvc_remote.push_experiment(root, name, remote, stage_environment())}")


def keep_tracking_state(state_dir: str | None) -> None:
    """Keep the MLflow outbox in ``state_dir`` (a folder that outlives the run's checkout) unless the machine set
    SEGPIPE_STATE_DIR itself."""
    if state_dir and not os.environ.get(STATE_ENV):
        os.environ[STATE_ENV] = str(Path(state_dir).expanduser().resolve())


def report_queued_tracking(root: Path) -> None:
    """Send what still waits in the outbox; if the server is still unreachable, say where the calls stay."""
    with working_directory(root):  # the outbox is .segpipe of the project unless SEGPIPE_STATE_DIR moves it
        if not tracking.pending_count():
            return
        tracking.flush(load_params(Path("params.yaml")).tracking)
        left, where = tracking.pending_count(), Outbox().path.resolve()
    if left:
        get_run_logger().warning("%d MLflow calls could not reach the tracking server; they stay queued in %s: "
                                 "`SEGPIPE_STATE_DIR=%s segpipe sync-tracking` sends them once the server is back",
                                 left, where, where.parent)


@flow(name="segmentation-pipeline", log_prints=True)
def segmentation_pipeline(overrides: dict[str, Any] | None = None, project: str = ".",
                          experiment_name: str | None = None, state_dir: str | None = None,
                          sweep_trial: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ingest -> export through DVC with optional dotted-key overrides; return metrics and the MLflow run.

    With a default DVC remote in the project, the run first fetches the stage runs recorded there (a stage that
    anyone ran with the same code, params and data is restored, not run) and pushes its own results at the end.
    ``state_dir`` keeps the MLflow outbox out of the checkout (a worker's checkout is removed after the run).
    ``sweep_trial`` is set by a sweep that runs this as one of its trials: ``environment`` tells the stages the
    study to report to and the MLflow run to record under."""
    root = Path(project).resolve()
    overrides = overrides or {}
    keep_tracking_state(state_dir)
    os.environ.update((sweep_trial or {}).get("environment", {}))  # this flow run's own process
    code = code_version(root)
    print(f"code: {code.describe()} in {root}")
    remote = dvc_remote.default_remote(root, stage_environment())
    if remote:
        print(f"DVC remote '{remote}': {dvc_remote.pull(root, remote, stage_environment())}")
    params = write_overrides(root / "params.yaml", overrides)
    retrying = run_stage.with_options(retries=params.orchestration.retries,
                                      retry_delay_seconds=params.orchestration.retry_delay_seconds)
    timeout = params.orchestration.timeout_seconds
    with stops_reach_children():  # a Ctrl-C or kill of the flow stops the stage it runs
        stages = {stage: retrying(stage, str(root), timeout, pull=bool(remote)) for stage in pipeline_stages(root)}
    if overrides:
        save_experiment(root, overrides, experiment_name, remote)
    if remote:
        print(f"pushed to DVC remote '{remote}': {dvc_remote.push(root, remote, stage_environment())}")
    report_queued_tracking(root)
    results = read_results(root)
    create_markdown_artifact(markdown_report(results, stages, overrides, code), key="segmentation-pipeline",
                             description="code, test metrics and MLflow run")
    return {"mlflow_run_id": results["mlflow_run_id"], "metrics": results["metrics"], "stages": stages,
            "commit": code.commit}


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.pipeline [--set KEY=VALUE ...]``: one run of the pipeline flow here."""
    parser = flow_parser("flows.pipeline", "Run the stages of dvc.yaml as a Prefect flow, here (a temporary "
                                           "Prefect API starts by itself unless PREFECT_API_URL names a server).")
    parser.add_argument("--set", dest="overrides", action="append", type=dotted_value, default=[],
                        metavar="KEY=VALUE", help="a params override, as with `dvc exp run -S`; the run is saved as "
                                                  "a DVC experiment (repeat for several)")
    parser.add_argument("--experiment-name", default=None, help="name of the DVC experiment a run with --set saves")
    args = parser.parse_args(argv)
    sigterm_exits()
    segmentation_pipeline(overrides=dict(args.overrides), project=args.project,
                          experiment_name=args.experiment_name)


if __name__ == "__main__":
    main()
