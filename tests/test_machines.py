"""Several machines on this host (tests/machines.py), sharing only what real machines share: a bare git
repository, a DVC remote on S3 (moto's server on loopback), one Prefect server and one MLflow server."""

from __future__ import annotations

import pytest

from tests.conftest import THREE_CLASSES, tiny_train_params
from tests.machines import Machine, team

pytestmark = pytest.mark.slow
STAGES_AFTER_SOURCE = ("ingest", "clean", "split", "augment", "pretrain", "train", "evaluate", "export")


def completed(machines: list[Machine], runs: list[dict]) -> None:
    for run in runs:
        if run["state_type"] != "COMPLETED":
            logs = "\n".join(m.worker_log[-4000:] for m in machines)
            pytest.fail(f"flow run {run['name']}: {run['state_type']} {run['state']['message']}\n{logs}", pytrace=False)


def test_two_machines_share_code_data_and_tracking_through_the_team_servers(tmp_path_factory):
    params = tiny_train_params(train={"epochs": 1, "batch_size": 4, "loader_workers": 0})
    with team(tmp_path_factory.mktemp("machines"), params) as shared:
        assert f"each run clones {shared.origin} at branch main (now {shared.commit[:12]})" in shared.deployed
        machine_a, machine_b = shared.machine("machine-a"), shared.machine("machine-b")

        # machine A runs the pipeline first; machine B then runs the same params and restores every stage
        with machine_a.worker():
            first, first_s = shared.run_and_time({})
        completed([machine_a], first)
        with machine_b.worker():
            second, second_s = shared.run_and_time({})
            completed([machine_b], second)
            with machine_a.worker():  # a sweep on the laptop: its two trials at once, one on each worker
                sweep, parallel, parallel_s = shared.sweep({"train.optimizer.lr": [0.003, 0.03]})
                completed([machine_a, machine_b], parallel)
                failing, _ = shared.run_and_time({"ingest.format": "mask_folder", "ingest.source": "/laptop/camvid",
                                                  "ingest.mask_folder.classes": THREE_CLASSES})
        print(f"first run on machine A {first_s:.0f} s; same params on machine B {second_s:.0f} s; "
              f"a sweep of two trials at once on two workers {parallel_s:.0f} s")

        first_logs, second_logs = shared.logs(first[0]["id"]), shared.logs(second[0]["id"])
        assert f"code: commit {shared.commit} (main of {shared.origin}) in {machine_a.tmp}" in first_logs
        assert f"in {machine_b.tmp}" in second_logs  # each run works in a checkout of its own, on its machine
        assert "Running stage 'train'" in first_logs
        for stage in STAGES_AFTER_SOURCE:
            assert f"Stage '{stage}' is cached - skipping run" in second_logs, stage
        assert second_s < first_s
        # where each trial ran is the checkout its log names; a worker's own log also names the runs it tried to
        # take and lost to the other worker
        ran_on = {run["id"]: [m.name for m in (machine_a, machine_b) if f"in {m.tmp}" in shared.logs(run["id"])]
                  for run in parallel}
        assert sorted(name for names in ran_on.values() for name in names) == ["machine-a", "machine-b"], ran_on
        for logs in (shared.logs(run["id"]) for run in parallel):
            assert "Stage 'split' is cached" in logs and "Running stage 'train'" in logs
        trials = {trial["name"]: trial for trial in sweep["trials"]}
        assert [t["state"] for t in trials.values()] == ["complete", "complete"]
        assert all("val_miou" in t["metrics"] and "test_miou" in t["metrics"] for t in trials.values())
        assert not [path for m in (machine_a, machine_b) for path in m.tmp.glob("*/*/dvc.yaml")]  # gone with the runs

        # a source path that exists only on the laptop: one line naming the path and the remedies
        assert failing[0]["state_type"] == "FAILED"
        message = failing[0]["state"]["message"]
        assert "segpipe source: error: ingest.source /laptop/camvid does not exist on this machine" in message
        assert "a path they all mount (NFS)" in message and "`dvc add`" in message

        # MLflow: one complete run per training (B restored A's), each tagged with the commit of its code
        from mlflow.tracking import MlflowClient

        client = MlflowClient(shared.shared["MLFLOW_TRACKING_URI"])
        every = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
        runs = [run for run in every if run.info.run_id != sweep["parent_run_id"]]
        assert sorted(run.data.params["train.optimizer.lr"] for run in runs) == ["0.001", "0.003", "0.03"]
        children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == sweep["parent_run_id"]]
        assert sorted(run.data.tags["segpipe.trial"] for run in children) == sorted(trials)
        assert {run.data.tags["segpipe.trial_state"] for run in children} == {"complete"}
        for run in runs:
            assert run.info.status == "FINISHED" and "test_miou" in run.data.metrics
            assert run.data.tags["git.commit"] == shared.commit
            assert "export" in {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
        for machine in (machine_a, machine_b):  # the outbox lives in the machine's state folder; nothing waits
            state = machine.root / "home/.segpipe"
            assert (state / "mlflow_run_ids.json").is_file()
            assert not (state / "mlflow_outbox.jsonl").is_file() or not (state / "mlflow_outbox.jsonl").read_text()

        # a third clone sees both experiments on the git remote and pulls one with its outputs
        reviewer = shared.machine("reviewer")
        assert reviewer.run("git", "clone", "-q", str(shared.origin), "segpipe").returncode == 0
        clone = reviewer.root / "segpipe"
        listed = reviewer.run("dvc", "exp", "list", "origin", cwd=clone)
        assert all(name in listed.stdout for name in trials), listed.stdout + listed.stderr
        best = sweep["trials"][0]["name"]
        pulled = reviewer.run("dvc", "exp", "pull", "origin", best, cwd=clone)
        assert pulled.returncode == 0, pulled.stderr
        applied = reviewer.run("dvc", "exp", "apply", best, cwd=clone)
        assert applied.returncode == 0, applied.stderr
        assert (clone / "export/model.onnx").is_file()
