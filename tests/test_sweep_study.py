"""The sweep's Optuna study: shared journal storage written by trial processes at once, the pruners as the trials
see them, and optuna-dashboard on the storage."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from segpipe.errors import SegpipeError
from segpipe.params import SweepParams, TrialParams, parse_params
from segpipe.sweep.reporting import TrialReporter
from segpipe.sweep.results import settle_trial
from segpipe.sweep.search import TrialSource
from segpipe.sweep.study import STORAGE_ENV, open_study, storage_url
from tests.servers import bin_path, free_port, stop, wait_healthy

REPORTING = """
import json, sys
from segpipe.params import TrialParams
from segpipe.sweep.reporting import TrialReporter
from segpipe.sweep.results import settle_trial
number, epochs = int(sys.argv[1]), int(sys.argv[2])
reporter = TrialReporter(TrialParams(study="shared", number=number))
for epoch in range(1, epochs + 1):
    reporter.should_stop(epoch, {"val_miou": 0.1 * number + 0.001 * epoch})
reporter.finish({"val_miou": 0.1 * number + 0.001 * epochs, "epochs_run": epochs, "pruned": False})
"""


def sweep_params(**values) -> SweepParams:
    return SweepParams.model_validate({"method": "random", "objective": "val_miou", "trials": 4,
                                       "space": {"train.optimizer.lr": {"low": 1e-4, "high": 1e-1, "log": True}},
                                       **values})


def test_two_trial_processes_report_to_one_journal_at_once(tmp_path):
    sweep = sweep_params(study="shared")
    url = storage_url(".segpipe/optuna.journal", tmp_path)
    assert url == str(tmp_path / ".segpipe/optuna.journal")
    study = open_study(sweep, url, seed=0, max_epochs=40)
    source = TrialSource(study, sweep, seed=0)
    trials = [source.ask(), source.ask()]
    env = {STORAGE_ENV: url, "PYTHONPATH": str(Path(__file__).parents[1])}
    processes = [subprocess.Popen([sys.executable, "-c", REPORTING, str(t.number), "40"], env=env,
                                  stderr=subprocess.PIPE, text=True) for t in trials]
    for process in processes:
        assert process.wait(120) == 0, process.stderr.read()
    written = {t.number: t for t in study.get_trials()}
    assert [written[t.number].state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(sorted(written[t.number].intermediate_values) == list(range(1, 41)) for t in trials)
    assert written[1].value == pytest.approx(0.14) and written[1].user_attrs["metrics"]["epochs_run"] == 40
    assert len(TrialSource(open_study(sweep, url, seed=0, max_epochs=40), sweep, seed=0)) == 2  # 2 of 4 left


def test_hyperband_stops_the_weak_trials_that_report_to_it(tmp_path, monkeypatch):
    sweep = sweep_params(study="hb", pruner="hyperband", trials=9,
                         pruning={"min_epochs": 1, "reduction_factor": 3})
    url = storage_url("hb.journal", tmp_path)
    monkeypatch.setenv(STORAGE_ENV, url)
    study = open_study(sweep, url, seed=0, max_epochs=9)
    assert study.user_attrs["pruner"]["max_epochs"] == 9 and study.user_attrs["pruner"]["name"] == "hyperband"
    source = TrialSource(study, sweep, seed=0)
    epochs_run = []
    for quality in (0.9, 0.8, 0.1, 0.7, 0.05, 0.85, 0.2, 0.1, 0.95):  # each trial as its own training opens it
        trial = source.ask()
        reporter = TrialReporter(TrialParams(study="hb", number=trial.number))
        epoch = 0
        while epoch < 9:
            epoch += 1
            if reporter.should_stop(epoch, {"val_miou": quality * epoch / 9}):
                break
        pruned = epoch < 9
        reporter.finish({"val_miou": quality * epoch / 9, "epochs_run": epoch, "pruned": pruned})
        epochs_run.append(epoch)
    states = [t.state.name for t in study.get_trials()]
    assert "PRUNED" in states and sum(epochs_run) < 9 * 9, (states, epochs_run)
    assert epochs_run[0] == 9 and epochs_run[-1] == 9  # the first of its bracket and the best run to the end


def test_a_test_objective_is_told_by_the_sweep_after_evaluation_not_by_training(tmp_path, monkeypatch):
    sweep = SweepParams.model_validate({"method": "grid", "study": "arms", "objective": "test_miou",
                                        "allow_test_objective": True, "space": {"base.seed": [0, 1]}})
    url = storage_url("arms.journal", tmp_path)
    monkeypatch.setenv(STORAGE_ENV, url)
    study = open_study(sweep, url, seed=0, max_epochs=3)
    trial = TrialSource(study, sweep, seed=0).ask()
    reporter = TrialReporter(TrialParams(study="arms", number=trial.number))
    assert not any(reporter.should_stop(epoch, {"val_miou": 0.1 * epoch}) for epoch in (1, 2, 3))  # no test yet
    reporter.finish({"val_miou": 0.3, "epochs_run": 3, "pruned": False})
    assert study.trials[0].state.name == "RUNNING" and study.trials[0].intermediate_values == {}
    run = {"metrics": {"val_miou": 0.3, "test_miou": 0.25, "epochs_run": 3}}
    assert settle_trial(study, trial, run, "test_miou") == "complete"
    reopened = open_study(sweep, url, seed=0, max_epochs=3).trials[0]  # as a later session reads the journal
    assert reopened.value == 0.25 and reopened.user_attrs["metrics"]["test_miou"] == 0.25
    assert len(TrialSource(open_study(sweep, url, seed=0, max_epochs=3), sweep, seed=0)) == 1  # seed 1 is left


def test_a_trial_without_its_study_or_storage_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    with pytest.raises(SegpipeError, match="train.trial names study 'x' but SEGPIPE_OPTUNA_STORAGE is not set"):
        TrialReporter(TrialParams(study="x", number=0))
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "empty.journal"))
    with pytest.raises(SegpipeError, match="study 'x' in .*empty.journal has no trial 0"):
        TrialReporter(TrialParams(study="x", number=0))
    with pytest.raises(SegpipeError, match="storage holds a password"):
        parse_params({"orchestration": {"sweep": {"storage": "postgresql://team:secret@db.example/optuna"}}})
    with pytest.raises(SegpipeError, match="neither a journal file nor a database URL"):
        storage_url("s3://bucket/study", tmp_path)


def test_optuna_dashboard_opens_the_sweep_storage(tmp_path):
    sweep = sweep_params(study="seen")
    url = storage_url("optuna.journal", tmp_path)
    study = open_study(sweep, url, seed=0, max_epochs=None)
    study.tell(TrialSource(study, sweep, seed=0).ask(), 0.5)
    port = free_port()
    process = subprocess.Popen([bin_path("optuna-dashboard"), url, "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/studies", process, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
            studies = json.loads(response.read())["study_summaries"]
    finally:
        stop(process)
    assert [s["study_name"] for s in studies] == ["seen"]
