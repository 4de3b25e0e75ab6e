"""How each trial ended, as the study records it, and the sweep's rows of results: the study's trials with the
validation metrics their training stored there and the test metrics of their runs (DVC's here, MLflow's for a
trial that ran on another machine or in an earlier sweep run)."""

from __future__ import annotations

from typing import Any

from segpipe import tracking
from segpipe.params import Params

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def _frozen(study: Any, number: int) -> Any:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def settle_trial(study: Any, trial: Any, result: dict[str, Any] | None, objective: str) -> str:
    """The state a trial ended in ('complete', 'pruned', 'failed'). Its training tells the study itself; a trial
    whose run failed, or whose training never reported (DVC restored it from its run cache), is told here: failed,
    or complete with the objective the run recorded."""
    import optuna

    frozen = _frozen(study, trial.number)
    if frozen.state.name == "RUNNING":
        value = (result or {}).get("metrics", {}).get(objective)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        else:
            trial.set_user_attr("metrics", result["metrics"])
            study.tell(trial, value, skip_if_finished=True)
        frozen = _frozen(study, trial.number)
    return STATES.get(frozen.state.name, frozen.state.name.lower())


def abandon_trials(study: Any, trials: list[Any]) -> None:
    """Tell the study that ``trials``, still running when the sweep was stopped, failed: a continued study runs
    them again rather than holding them as running for ever."""
    import optuna

    for trial in trials:
        study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def recorded_test_metrics(params: Params, name: str) -> dict[str, float]:
    """The test metrics that trial ``name``'s MLflow run holds: how a trial that ran on a work pool, or in an earlier
    sweep run, reports them."""
    return {k: v for k, v in tracking.trial_metrics(params, name).items() if k.startswith("test_")}


def study_results(study: Any, params: Params, ran: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial of the study that segpipe ran and that ended: name, state, values, metrics (the study's
    validation ones and the test ones of its run) and seconds. ``ran`` holds what this sweep run's trials
    returned."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        name = trial.user_attrs.get("name")
        if not name or trial.state.name not in STATES:
            continue
        own = ran.get(name, {})
        recorded = own.get("metrics") or recorded_test_metrics(params, name)
        seconds = own.get("seconds") or (round(trial.duration.total_seconds(), 1) if trial.duration else None)
        rows.append({"name": name, "number": trial.number, "state": STATES[trial.state.name],
                     "overrides": dict(trial.params), "metrics": {**recorded, **trial.user_attrs.get("metrics", {})},
                     "seconds": seconds, "steps": trial.user_attrs.get("steps")})
    return rows
