"""One sweep on a work pool with one worker, then the same sweep (a new study, the same trials) with two workers,
on the simulated team of tests/machines.py (a bare git repository, a DVC remote on S3 via moto, one Prefect
server, one MLflow server, a worker per machine folder), measured in one session.

    python -m bench.sweep_workers      # about 10 minutes on 2 cores; writes bench/results/sweep_workers.json

Each trial is a run of the pipeline deployment in a checkout of its own on the worker that takes it. The two
worker folders share this host's cores, so two trials at once compete for them; on two machines each has its own.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

from segpipe.fsutil import write_json
from tests.conftest import tiny_train_params
from tests.machines import team

RESULTS = Path(__file__).parent / "results" / "sweep_workers.json"
SPACE = {"train.optimizer.lr": [0.001, 0.003, 0.01, 0.03]}


def main() -> None:
    params = tiny_train_params(train={"epochs": 2, "batch_size": 4, "loader_workers": 0})
    with tempfile.TemporaryDirectory() as folder, team(Path(folder), params) as shared:
        machine_a, machine_b = shared.machine("machine-a"), shared.machine("machine-b")
        with machine_a.worker():
            shared.run_and_time({})  # the shared stages, once: both sweeps restore them from the DVC remote
            one, _, one_s = shared.sweep(SPACE, concurrency=1, study="one-worker")
            with machine_b.worker():
                two, _, two_s = shared.sweep(SPACE, concurrency=2, study="two-workers")
    figures = {
        "what": "wall seconds of a 4-trial grid sweep on a work pool (tiny synthetic project: 24 scenes of 64x64, a "
                "2-epoch U-Net), each trial a pipeline run cloned on its worker: one worker (one trial at a time) vs "
                "two workers (two at once), the worker folders sharing this host's cores",
        "one_worker_s": round(one_s, 1), "two_workers_s": round(two_s, 1),
        "two_over_one": round(two_s / one_s, 3),
        "best_val_miou": {"one_worker": one["trials"][0]["metrics"]["val_miou"],
                          "two_workers": two["trials"][0]["metrics"]["val_miou"]},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    }
    write_json(RESULTS, figures)
    print(figures)


if __name__ == "__main__":
    main()
