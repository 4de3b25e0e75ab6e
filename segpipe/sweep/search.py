"""The sweep's search: which trials to run next, asked of the Optuna study (:mod:`segpipe.sweep.study`). Grid and
random search list their trials up front and enqueue them in the study; Bayesian search (Optuna's TPE) proposes
each trial from the ones the study holds."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.params import RangeSpec, SweepParams


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


FINISHED = ("COMPLETE", "PRUNED")  # trial states that count as done: a failed trial is tried again


def finished_trials(study: Any) -> list[Any]:
    """The study's trials that ended complete or pruned, in the order they were asked."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]


def _check_same_choices(study: Any, distributions: dict[str, Any]) -> None:
    """A continued study keeps each listed key's values (Optuna's samplers need one set of choices per key)."""
    import optuna

    for trial in study.get_trials(deepcopy=False):
        for key, before in trial.distributions.items():
            now = distributions.get(key)
            if isinstance(before, optuna.distributions.CategoricalDistribution) and now and now != before:
                raise SegpipeError(f"study '{study.study_name}' tried {key} among {list(before.choices)}, not "
                                   f"{list(now.choices)}: keep the values to continue it, or name another "
                                   f"orchestration.sweep.study")


class TrialSource:
    """The trials this sweep run adds to the study, asked one at a time whenever a worker is free: grid trials are
    the combinations the study has not finished (in grid order), random trials the next draws of the seeded
    sequence until the study holds ``trials`` finished ones, bayes trials TPE's proposals given every trial so far
    (pruned ones with their last reported epoch)."""

    def __init__(self, study: Any, sweep: SweepParams, seed: int) -> None:
        self.study, self.sweep = study, sweep
        self.distributions = optuna_distributions(sweep.space)
        _check_same_choices(study, self.distributions)
        done = finished_trials(study)
        if sweep.method == "grid":
            self.queue = [c for c in grid(sweep.space) if all(t.params != c for t in done)]
        elif sweep.method == "random":
            asked, wanted = len(study.trials), max(0, sweep.trials - len(done))
            self.queue = random_trials(sweep.space, asked + wanted, seed)[asked:]
        else:
            self.queue = [None] * max(0, sweep.trials - len(done))  # TPE decides each when it is asked

    def __len__(self) -> int:
        return len(self.queue)

    def stop(self) -> int:
        """Ask no more trials in this run; return how many were left (a later run of the study asks them)."""
        left = len(self.queue)
        self.queue.clear()
        return left

    def ask(self) -> Any | None:
        """The next trial (an Optuna trial, marked running in the study), or None when this run has asked all."""
        if not self.queue:
            return None
        fixed = self.queue.pop(0)
        if fixed is not None:
            self.study.enqueue_trial(fixed)
        return self.study.ask(self.distributions)
