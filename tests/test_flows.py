"""Prefect flows with real components: the Prefect engine, DVC in git repos, MLflow stores."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from segpipe.errors import SegpipeError
from tests.conftest import GIT_IDENTITY, new_project, sh, tiny_train_params

pytestmark = pytest.mark.slow
DATA_OUTS = ("data/raw", "data/clean", "data/split", "data/cache", "models/pretrained.pt", "models/model.pt",
             "export/model.onnx", "reports/metrics.json")


@pytest.fixture(scope="module")
def prefect_engine(tmp_path_factory):
    """A real Prefect API (temporary local server on SQLite) for the flows of this module."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.update(GIT_IDENTITY)  # dvc exp commits need an author
    with prefect_test_harness(server_startup_timeout=120):
        yield


def lock_hashes(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])
            if out["path"] in DATA_OUTS}


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory, prefect_engine) -> Path:
    """A project that the pipeline flow has run once."""
    from flows.pipeline import segmentation_pipeline

    project = new_project(tmp_path_factory.mktemp("flow"), tiny_train_params(), commit=True)
    state = segmentation_pipeline(project=str(project), return_state=True)
    assert state.is_completed(), state.message
    (project / "flow_run_id").write_text(str(state.state_details.flow_run_id))
    return project


def test_stage_output_reaches_the_task_logs_line_by_line_as_it_happens(flow_project):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flow_run_id = (flow_project / "flow_run_id").read_text()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    messages = [(log.timestamp, log.message) for log in logs]
    starting = [t for t, m in messages if m.startswith("train: starting")]
    epochs = [t for t, m in messages if m.startswith("train: epoch ")]
    assert len(starting) == 1 and len(epochs) == 2  # each line its own record, not one blob at the end
    assert starting[0] < epochs[0] < epochs[1]
    assert not any("git add" in m or "dvc push" in m or "autostage" in m for _, m in messages)


def test_pipeline_flow_completes_with_the_outputs_of_dvc_repro(flow_project, tmp_path):
    reference = new_project(tmp_path / "reference", tiny_train_params())
    sh(reference, "dvc", "repro", "augment")  # the data stages; that training repeats exactly is test_train's
    made = lock_hashes(reference)
    assert len(made) == 4 and made == {path: md5 for path, md5 in lock_hashes(flow_project).items() if path in made}
    assert len(lock_hashes(flow_project)) == len(DATA_OUTS)
    assert "up to date" in sh(flow_project, "dvc", "status")


def test_a_clone_with_the_team_remote_restores_every_stage_instead_of_running_it(flow_project, tmp_path,
                                                                                prefect_engine):
    """The team's DVC remote is a shared folder: what one clone pushed, a flow run in another clone restores."""
    from flows.pipeline import segmentation_pipeline

    remote = tmp_path / "team-remote"
    sh(flow_project, "dvc", "remote", "add", "--local", "team", str(remote))  # not a default: later tests push not
    sh(flow_project, "dvc", "push", "--run-cache", "-r", "team")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(flow_project), str(clone))
    sh(clone, "dvc", "remote", "add", "-d", "team", str(remote))
    result = segmentation_pipeline(project=str(clone))
    assert {stage: status for stage, status in result["stages"].items() if stage != "source"} == {
        stage: "restored" for stage in result["stages"] if stage != "source"}  # the source link is always made
    assert lock_hashes(clone) == lock_hashes(flow_project)
    assert result["metrics"] == json.loads((flow_project / "reports/metrics.json").read_text())["test"]


def test_pipeline_flow_with_overrides_reruns_what_changed_and_saves_an_experiment(flow_project, prefect_engine):
    from flows.pipeline import segmentation_pipeline

    result = segmentation_pipeline(project=str(flow_project), overrides={"evaluate.boundary_tolerance": 4},
                                   experiment_name="tolerance4")
    assert result["stages"]["evaluate"] == "ran"
    assert all(result["stages"][s] == "up to date" for s in ("ingest", "clean", "split", "augment", "pretrain",
                                                                          "train"))
    assert 0 <= result["metrics"]["miou"] <= 1 and result["mlflow_run_id"]
    assert yaml.safe_load((flow_project / "params.yaml").read_text())["evaluate"]["boundary_tolerance"] == 4
    assert "tolerance4" in sh(flow_project, "dvc", "exp", "list")


def test_failing_stage_fails_the_flow_with_its_error(tmp_path, prefect_engine):
    from flows.pipeline import segmentation_pipeline

    project = new_project(tmp_path / "failing", tiny_train_params())
    overrides = {"ingest.format": "mask_folder", "ingest.source": str(tmp_path / "no-such-folder"),
                 "ingest.mask_folder.classes": [{"name": "a", "color": [0, 0, 0]}]}
    state = segmentation_pipeline(project=str(project), overrides=overrides, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="stage source failed: segpipe source: error: .*no-such-folder does not exist "
                                        "on this machine"):
        state.result()
    bad = segmentation_pipeline(project=str(project), overrides={"train.epochs": 0}, return_state=True)
    assert bad.is_failed()
    with pytest.raises(Exception, match="train.epochs"):
        bad.result()


@pytest.mark.parametrize("flow_module, signum", [("pipeline", signal.SIGINT), ("sweep", signal.SIGTERM)])
def test_stopping_a_flow_stops_the_stage_or_trial_it_runs(tmp_path, prefect_engine, flow_module, signum):
    import optuna
    from prefect.settings import PREFECT_API_URL

    params = tiny_train_params(orchestration={"sweep": {"method": "grid", "space": {"train.optimizer.lr": [0.01]}}})
    project = new_project(tmp_path / "stopped", params)
    sleeper = "python -c \"import os, time; open('stage.pid', 'w').write(str(os.getpid())); time.sleep(600)\""
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"source": {"cmd": sleeper}}}))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "a stage that runs until stopped")
    before = (project / "params.yaml").read_text()
    flow = subprocess.Popen([sys.executable, "-m", f"flows.{flow_module}"], cwd=project,
                            env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
    pid_file, stage = project / "stage.pid", None
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()):
            assert flow.poll() is None and time.monotonic() < deadline, "the stage never started"
            time.sleep(0.2)
        stage = int(pid_file.read_text())
        flow.send_signal(signum)
        code = flow.wait(timeout=60)
        assert code == 128 + signal.SIGTERM if signum == signal.SIGTERM else code != 0  # exit handlers ran
        deadline = time.monotonic() + 20
        while _alive(stage):
            assert time.monotonic() < deadline, "the stage outlived its flow"
            time.sleep(0.2)
    finally:
        flow.kill()
        if stage and _alive(stage):
            os.kill(stage, signal.SIGKILL)
    assert (project / "params.yaml").read_text() == before
    if flow_module == "sweep":  # the stopped trial is failed, so that the study's next run runs it again
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
            str(project / ".segpipe/optuna.journal")))
        trials = optuna.load_study(study_name="segpipe-sweep", storage=storage).trials
        assert [t.state.name for t in trials] == ["FAIL"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_pruned_sweep_stops_the_hopeless_arm_and_a_second_run_continues_its_study(tmp_path, prefect_engine):
    import mlflow
    import optuna

    from flows.sweep import segmentation_sweep

    project = new_project(tmp_path / "sweep", tiny_train_params(train={"epochs": 3, "batch_size": 4,
                                                                        "loader_workers": 0}), commit=True)
    before = (project / "params.yaml").read_text()
    result = segmentation_sweep(project=str(project), method="grid", pruner="median", results="sweep.json",
                                space={"train.optimizer.lr": [0.01, 1e-7]})  # the second arm learns nothing
    assert (project / "params.yaml").read_text() == before  # the workspace params are left as they were
    good, hopeless = result["trials"]  # selected on validation, complete before pruned; test only reported
    assert good["state"] == "complete" and good["overrides"] == {"train.optimizer.lr": 0.01}
    assert good["metrics"]["epochs_run"] == 3 and "test_miou" in good["metrics"]
    assert good["steps"] == hopeless["steps"] and good["steps"].startswith("channels_last, ")  # the path each ran
    assert hopeless["state"] == "pruned" and hopeless["metrics"]["epochs_run"] == 2  # after the warmup epoch
    assert hopeless["metrics"]["pruned_epoch"] == 2 and hopeless["metrics"]["val_miou"] < good["metrics"]["val_miou"]
    assert result["compute"] == {"trial_epochs": 5, "unpruned_trial_epochs": 6, "saved_share": 0.1667,
                                 "pruned_trials": 1}
    assert result["best_command"].startswith(f"dvc exp run -S train.optimizer.lr=0.01  # or: dvc exp apply "
                                             f"{good['name']}")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:  # a trial's epochs reach its task's log as they happen
        [task_run] = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[good["name"]])))
        logs = client.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run.id])))
    assert [log.message[:16] for log in logs if log.message.startswith("train: epoch ")] == \
        ["train: epoch 1/3", "train: epoch 2/3", "train: epoch 3/3"]
    written = json.loads((project / "sweep.json").read_text())
    assert written["objective"] == "val_miou" and written["arms"] == [] and written["compute"] == result["compute"]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(project / ".segpipe/optuna.journal")))
    study = optuna.load_study(study_name="segpipe-sweep", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert sorted(study.trials[1].intermediate_values) == [1, 2]  # the curve the trainer reported
    assert study.trials[0].value == good["metrics"]["val_miou"]
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("segpipe")
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'")
    tags = {c.data.tags["segpipe.trial"]: c.data.tags for c in children}
    assert {t["segpipe.trial_state"] for t in tags.values()} == {"complete", "pruned"}
    assert tags[hopeless["name"]]["segpipe.trial_number"] == "1" and tags[good["name"]]["segpipe.study"] == \
        "segpipe-sweep"
    pruned_run = next(c for c in children if c.data.tags["segpipe.trial"] == hopeless["name"])
    assert len(client.get_metric_history(pruned_run.info.run_id, "val_miou")) == 2  # its curve is kept
    assert pruned_run.data.metrics["pruned_epoch"] == 2 and "test_miou" in pruned_run.data.metrics
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.metrics["best_val_miou"] == good["metrics"]["val_miou"]
    assert parent.data.metrics["trial_epochs"] == 5 and parent.data.params["sweep.pruner"] == "median"
    summary = (project / ".segpipe/sweep_summary.md").read_text()
    assert "| state | train.optimizer.lr | val_miou | test_miou | epochs |" in summary
    assert "Compute: 5 trial-epochs run of 6 without pruning (1 trials pruned, 17% saved)" in summary
    assert "sweep_summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert sh(project, "dvc", "exp", "list").count("segpipe-sweep-") == 2  # the pruned trial's experiment too

    with pytest.raises(SegpipeError, match="study 'segpipe-sweep' tried train.optimizer.lr among \\[0.01, 1e-07\\], "
                                           "not \\[0.01, 1e-07, 0.003\\]: keep the values to continue it"):
        segmentation_sweep(project=str(project), space={"train.optimizer.lr": [0.01, 1e-7, 0.003]})
    spent = segmentation_sweep(project=str(project), method="bayes", trials=3, pruner="median", budget_minutes=1e-9,
                               space={"train.optimizer.lr": [0.01, 1e-7]})  # its budget is spent before a trial
    assert [t["name"] for t in spent["trials"]] == [good["name"], hopeless["name"]]
    assert len(optuna.load_study(study_name="segpipe-sweep", storage=storage).trials) == 2
    again = segmentation_sweep(project=str(project), method="bayes", trials=3, pruner="median",
                               space={"train.optimizer.lr": [0.01, 1e-7]})  # TPE, told of both earlier trials
    assert len(again["trials"]) == 3 and sh(project, "dvc", "exp", "list").count("segpipe-sweep-") == 3
    assert {t["name"] for t in again["trials"]} >= {good["name"], hopeless["name"]}  # not run again
    assert len(optuna.load_study(study_name="segpipe-sweep", storage=storage).trials) == 3
    old = next(t for t in again["trials"] if t["name"] == good["name"])
    assert old["metrics"]["test_miou"] == good["metrics"]["test_miou"]  # from its MLflow run


def test_sweep_pools_the_seeds_of_each_arm(capsys):
    from flows.sweep import _print_comparison
    from segpipe.params import SweepParams
    from segpipe.sweep.report import arm_table, paired_differences, summary_markdown

    sweep = SweepParams(space={"train.label_fraction": [0.1, 1.0], "model.weights": [None, "pretrained"],
                               "base.seed": [0, 1]}, objective="test_miou", allow_test_objective=True)
    results = []
    for fraction, weights, seed in itertools.product([0.1, 1.0], [None, "pretrained"], [0, 1]):
        score = fraction / 2 + (0.05 if weights else 0.0) + 0.01 * seed
        metrics = {"test_miou": score, **({"pretrain_seconds": 100.0 + seed} if weights else {})}
        results.append({"name": f"t{len(results)}", "metrics": metrics, "seconds": 1.0,
                        "overrides": {"train.label_fraction": fraction, "model.weights": weights, "base.seed": seed}})
    arms = arm_table(results, sweep)
    assert [a["arm"] for a in arms][:2] == [{"train.label_fraction": 0.1, "model.weights": None},
                                            {"train.label_fraction": 0.1, "model.weights": "pretrained"}]
    assert arms[1]["seeds"] == [0, 1] and arms[1]["mean"] == pytest.approx(0.105)
    assert arms[1]["std"] == pytest.approx(0.01 / 2 ** 0.5) and arms[1]["pretrain_seconds"] == 100.5
    assert arms[0]["pretrain_seconds"] is None and len(arms) == 4
    pairs = paired_differences(arms, sweep)  # pretrained minus scratch, seed by seed, at each label fraction
    assert [(p["reference"]["train.label_fraction"], p["reference"]["model.weights"]) for p in pairs] == \
        [(0.1, None), (1.0, None)]
    assert pairs[0]["seeds"] == [0, 1] and pairs[0]["differences"] == pytest.approx([0.05, 0.05])
    assert pairs[0]["mean"] == pytest.approx(0.05) and pairs[0]["std"] == pytest.approx(0.0)
    markdown = summary_markdown(results, sweep, None, arms, pairs=pairs)
    assert "| 0.1 | pretrained | 2 | 0.1050 ± 0.0071 |" in markdown
    assert "Nothing is chosen" in markdown and "Chosen:" not in markdown  # a test objective selects nothing
    assert '| [0, 1] | +0.0500, +0.0500 | +0.0500 ± 0.0000 |' in markdown
    _print_comparison("test_miou", arms, pairs)  # what the sweep prints instead of a chosen trial
    printed = capsys.readouterr().out
    assert 'arm {"train.label_fraction": 0.1, "model.weights": "pretrained"}: test_miou 0.1050 ± 0.0071 over ' \
           'seeds [0, 1]' in printed
    assert 'paired: {"train.label_fraction": 0.1, "model.weights": "pretrained"} minus {"train.label_fraction": ' \
           '0.1, "model.weights": null}: +0.0500 ± 0.0000 (seeds [0, 1]: +0.0500, +0.0500)' in printed
    assert "chosen" not in printed


def test_the_summary_ranks_complete_trials_first_and_counts_the_epochs_pruning_saved():
    from segpipe.params import SweepParams
    from segpipe.sweep.report import compute_used, summary_markdown, summary_table

    sweep = SweepParams(space={"train.optimizer.lr": [0.1, 0.01, 0.001]}, objective="val_miou", pruner="hyperband")
    rows = [{"name": "pruned", "state": "pruned", "overrides": {"train.optimizer.lr": 0.1}, "seconds": 3.0,
             "metrics": {"val_miou": 0.9, "epochs_run": 2}},  # best so far when it stopped, yet never chosen
            {"name": "failed", "state": "failed", "overrides": {"train.optimizer.lr": 0.01}, "seconds": 1.0,
             "metrics": {}},
            {"name": "complete", "state": "complete", "overrides": {"train.optimizer.lr": 0.001}, "seconds": 9.0,
             "metrics": {"val_miou": 0.5, "test_miou": 0.4, "epochs_run": 8}}]
    table = summary_table(rows, sweep)
    assert [row["name"] for row in table] == ["complete", "pruned", "failed"]
    compute = compute_used(table, full_epochs=8)  # the failed trial counts on neither side
    assert compute == {"trial_epochs": 10, "unpruned_trial_epochs": 16, "saved_share": 0.375, "pruned_trials": 1}
    markdown = summary_markdown(table, sweep, "dvc exp run ...", [], compute)
    assert "| 1 | complete | complete | 0.001 | 0.5000 | 0.4000 | 8 | 9.0 |" in markdown
    assert "Chosen: complete (val_miou 0.5000, test_miou 0.4000): `dvc exp run ...`" in markdown
    assert "Compute: 10 trial-epochs run of 16 without pruning (1 trials pruned, 38% saved)" in markdown


def test_trial_search_spaces():
    from segpipe.params import RangeSpec
    from segpipe.sweep.search import grid, optuna_distributions, random_trials

    assert grid({"a": [1, 2], "b": ["x", "y", "z"]})[-1] == {"a": 2, "b": "z"}
    assert len(grid({"a": [1, 2], "b": ["x", "y", "z"]})) == 6
    space = {"lr": RangeSpec(low=1e-4, high=1e-2, log=True), "model": ["unet", "lraspp"]}
    trials = random_trials(space, 5, seed=3)
    assert trials == random_trials(space, 5, seed=3) and all(1e-4 <= t["lr"] <= 1e-2 for t in trials)
    assert set(optuna_distributions(space)) == {"lr", "model"}
    json.dumps(trials)


def test_instance_sweep_ranks_trials_by_val_mask_ap(tmp_path, prefect_engine):
    import mlflow

    from flows.sweep import segmentation_sweep
    from tests.conftest import tiny_instance_params

    params = tiny_instance_params(train={"epochs": 1, "batch_size": 4, "loader_workers": 0})
    project = new_project(tmp_path / "instance-sweep", params, commit=True)
    result = segmentation_sweep(project=str(project), method="grid", space={"train.optimizer.lr": [0.0005, 0.002]})
    assert len(result["trials"]) == 2
    scores = [trial["metrics"]["val_mask_ap"] for trial in result["trials"]]
    assert scores == sorted(scores, reverse=True)  # the task's validation objective ranks the trials
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    parent = client.get_run(result["parent_run_id"])
    assert {"best_val_mask_ap", "best_test_mask_ap"} <= set(parent.data.metrics)


def test_a_test_metric_as_objective_is_refused_unless_asked_for():
    from segpipe.params import parse_params

    with pytest.raises(SegpipeError, match="orchestration.sweep: objective 'test_miou' is a test metric: choosing "
                                           "hyperparameters on the test set .* use val_miou"):
        parse_params({"orchestration": {"sweep": {"objective": "test_miou"}}})
    allowed = parse_params({"orchestration": {"sweep": {"objective": "test_miou", "allow_test_objective": True}}})
    assert allowed.orchestration.sweep.objective == "test_miou"
    assert parse_params({}).orchestration.sweep.objective is None  # the flow makes it val_<task objective>
    with pytest.raises(SegpipeError, match="pruner 'median' prunes on the epoch curve, which a test objective "
                                           "\\('test_miou'\\) does not have"):
        parse_params({"orchestration": {"sweep": {"objective": "test_miou", "allow_test_objective": True,
                                                  "pruner": "median"}}})


def test_the_sweep_never_writes_over_params_edited_while_it_ran(tmp_path):
    from segpipe.overrides import ParamsGuard

    path = tmp_path / "params.yaml"
    path.write_text("train: {epochs: 2}\n")
    guard = ParamsGuard(path)
    path.write_text("train: {epochs: 2, batch_size: 8}\n")  # what a trial's dvc exp run -S leaves
    guard.trial_done()
    guard.check("trial 1")
    assert guard.restore() == "" and path.read_text() == "train: {epochs: 2}\n"  # restored
    guard = ParamsGuard(path)
    path.write_text("train: {epochs: 9}\n")  # the user's edit, mid-sweep
    with pytest.raises(SegpipeError, match="was edited while the sweep ran; it stopped before trial 1"):
        guard.check("trial 1")
    assert "left as it is" in guard.restore() and path.read_text() == "train: {epochs: 9}\n"
    assert (tmp_path / "params.yaml.before-sweep.bak").read_text() == "train: {epochs: 2}\n"
