"""The sweep's Optuna study: where it is stored, how it is opened by the sweep and by each trial's training, and its
pruner. The study is the search state that every process shares: the sweep asks it for trials, the train stage of
each trial reports its epochs to it and tells it how the trial ended."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.params import PruningParams, SweepParams

STORAGE_ENV = "SEGPIPE_OPTUNA_STORAGE"  # how a trial's processes find the study (a URL may hold a host name)
DATABASES = ("postgresql", "mysql", "sqlite")


def storage_url(storage: str, project: Path) -> str:
    """The storage as every trial process can open it: a database URL as it is, a journal file made absolute."""
    if "://" in storage:
        if storage.split("://")[0].split("+")[0] not in DATABASES:
            raise SegpipeError(f"orchestration.sweep.storage: '{storage}' is neither a journal file nor a database "
                               f"URL ({', '.join(DATABASES)})")
        return storage
    return str((project / storage).resolve())


def open_storage(url: str) -> Any:
    """Optuna's storage for ``url``: an RDB storage for a database URL, else a journal file (with file locks, so
    processes on one machine or on a shared folder may write it at once)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in url:
        return optuna.storages.RDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url))


def build_pruner(name: str, settings: dict[str, Any]) -> Any:
    """The Optuna pruner called ``name`` with ``settings`` (a :class:`PruningParams` dump, with ``max_epochs``)."""
    import optuna

    pruning = PruningParams.model_validate({k: v for k, v in settings.items() if k not in ("name", "max_epochs")})
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials,
                                           n_warmup_steps=pruning.warmup_epochs + 1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruning.min_epochs,
                                                      reduction_factor=pruning.reduction_factor)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=pruning.min_epochs,
                                              max_resource=settings.get("max_epochs") or "auto",
                                              reduction_factor=pruning.reduction_factor)
    return optuna.pruners.NopPruner()


def sampler(sweep: SweepParams, seed: int, finished: int) -> Any:
    """The study's sampler for this sweep run. Grid trials are enqueued (in order) and random trials drawn by
    :mod:`segpipe.sweep.search`, so both use Optuna's random sampler only for what they leave open; bayes is TPE
    (pruned trials count with their last reported epoch; ``constant_liar`` when trials run at once). The seed moves
    with the trials the study already holds, so a continued sweep does not draw its first trials again."""
    import optuna

    if sweep.method == "bayes":
        return optuna.samplers.TPESampler(seed=seed + finished, constant_liar=sweep.concurrency > 1,
                                          n_startup_trials=min(10, max(1, sweep.trials // 3)))
    return optuna.samplers.RandomSampler(seed=seed + finished)


def open_study(sweep: SweepParams, url: str, seed: int, max_epochs: int | None) -> Any:
    """Create the sweep's study, or load it when one of that name exists: its direction, objective and pruner are
    kept in the study so that trial processes open it the same way, and a continued sweep must keep them."""
    import optuna

    storage = open_storage(url)
    pruner_spec = {"name": sweep.pruner, **sweep.pruning.model_dump(), "max_epochs": max_epochs}
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    finished = existing[sweep.study].n_trials if sweep.study in existing else 0
    study = optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction,
                                sampler=sampler(sweep, seed, finished), pruner=build_pruner(sweep.pruner, pruner_spec),
                                load_if_exists=True)
    wanted = {"objective": sweep.objective, "direction": sweep.direction}
    kept = {key: study.user_attrs.get(key) for key in wanted}
    if sweep.study in existing and kept != wanted:
        raise SegpipeError(f"study '{sweep.study}' in {url} optimises {kept}, not {wanted}: name another "
                           f"orchestration.sweep.study to start a new one")
    for key, value in {**wanted, "pruner": pruner_spec}.items():
        study.set_user_attr(key, value)
    return study


def open_trial(study_name: str, number: int) -> Any:
    """Trial ``number`` of the study that a trial's training reports to, opened from the storage in
    ``SEGPIPE_OPTUNA_STORAGE`` with the pruner the sweep stored in the study."""
    import optuna

    url = os.environ.get(STORAGE_ENV)
    if not url:
        raise SegpipeError(f"train.trial names study '{study_name}' but {STORAGE_ENV} is not set: a sweep sets both; "
                           f"to train outside a sweep, leave train.trial at null")
    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    except KeyError:
        raise SegpipeError(f"train.trial: study '{study_name}' in {url} has no trial {number}") from None
    spec = dict(storage.get_study_user_attrs(study_id).get("pruner") or {"name": "none"})
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=build_pruner(spec.pop("name"), spec))
    return optuna.trial.Trial(study, trial_id)
