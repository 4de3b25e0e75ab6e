"""Pipeline runs on simulated machines of a team (tests/machines.py: a bare git repository, a DVC remote on S3 via
moto, one Prefect server, one MLflow server, a worker per machine), measured in one session: the first run on
machine A, the same params on machine B (everything restored from the warm remote), two runs with overrides at
once on two workers, and two other runs with overrides on one worker, one after the other.

    python -m bench.team_runs          # about 12 minutes on 2 cores; writes bench/results/team_runs.json

The machines share this host's cores, so two runs at once on a 2-core host compete for them; on two real
machines each run has its own.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

from segpipe.fsutil import write_json
from tests.conftest import tiny_train_params
from tests.machines import team

RESULTS = Path(__file__).parent / "results" / "team_runs.json"


def _completed(runs: list[dict]) -> None:
    failed = [f"{run['name']}: {run['state']['message']}" for run in runs if run["state_type"] != "COMPLETED"]
    if failed:
        raise SystemExit(f"bench.team_runs: runs failed: {failed}")


def main() -> None:
    params = tiny_train_params(train={"epochs": 1, "batch_size": 4, "loader_workers": 0})
    with tempfile.TemporaryDirectory() as folder, team(Path(folder), params) as shared:
        machine_a, machine_b = shared.machine("machine-a"), shared.machine("machine-b")
        with machine_a.worker():
            first, first_s = shared.run_and_time({})
        with machine_b.worker():
            second, second_s = shared.run_and_time({})
            with machine_a.worker():
                parallel, parallel_s = shared.run_and_time({"train.optimizer.lr": 0.003}, {"train.optimizer.lr": 0.03})
        with machine_a.worker():
            sequential, sequential_s = shared.run_and_time({"train.optimizer.lr": 0.002}, {"train.optimizer.lr": 0.02})
        for runs in (first, second, parallel, sequential):
            _completed(runs)
    figures = {
        "what": "wall seconds from creating the flow runs to their end; tiny synthetic project (24 scenes of "
                "64x64, a 1-epoch U-Net), each run in its own git checkout on its worker",
        "first_run_machine_a_s": round(first_s, 1),
        "same_params_machine_b_warm_remote_s": round(second_s, 1),
        "warm_over_first": round(second_s / first_s, 3),
        "two_runs_at_once_two_workers_s": round(parallel_s, 1),
        "two_runs_one_after_the_other_one_worker_s": round(sequential_s, 1),
        "parallel_over_sequential": round(parallel_s / sequential_s, 3),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    }
    write_json(RESULTS, figures)
    print(figures)


if __name__ == "__main__":
    main()
