"""The sweep's search: which trials to run next. Grid and random search list their trials up front; Bayesian
search (Optuna's TPE) asks for a batch, is told each trial's objective (a validation metric) and asks again."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

from segpipe.params import RangeSpec, SweepParams

Batch = list[dict[str, Any]]  # the overrides of trials run at once


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


def search(sweep: SweepParams, seed: int, run: Callable[[Batch], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run the sweep's trials, ``sweep.concurrency`` at a time, through ``run`` (overrides in, one result dict with
    ``metrics`` per trial out, in order); return every result in the order the trials ran."""
    results: list[dict[str, Any]] = []
    if sweep.method == "bayes":
        import optuna

        study = optuna.create_study(direction=sweep.direction, sampler=optuna.samplers.TPESampler(seed=seed))
        distributions = optuna_distributions(sweep.space)
        while len(results) < sweep.trials:
            asked = [study.ask(distributions) for _ in range(min(sweep.concurrency, sweep.trials - len(results)))]
            for trial, result in zip(asked, run([t.params for t in asked]), strict=True):
                study.tell(trial, result["metrics"].get(sweep.objective))  # the validation objective, only
                results.append(result)
        return results
    candidates = grid(sweep.space) if sweep.method == "grid" else random_trials(sweep.space, sweep.trials, seed)
    for begin in range(0, len(candidates), sweep.concurrency):
        results += run(candidates[begin:begin + sweep.concurrency])
    return results
