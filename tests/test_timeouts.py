"""A hang becomes an error naming what hung: a stage subprocess of the flow, a DataLoader worker."""

import os
import time

import pytest
import torch

from segpipe.errors import SegpipeError


def test_a_stage_that_hangs_is_killed_and_fails_naming_it(tmp_path):
    """orchestration.timeout_seconds: the stage task gives up on a hung `dvc repro` and says which stage."""
    from flows.pipeline import StageFailed, run_stage

    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin/dvc"  # a dvc that hangs without a word
    fake.write_text("#!/bin/sh\nsleep 600\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        patch.setattr("flows.pipeline.stage_environment", lambda: dict(os.environ))
        patch.setattr("flows.child_processes.get_run_logger", lambda: __import__("logging").getLogger("test"))
        with pytest.raises(StageFailed, match=r"stage train failed: still running after 2 s .* killed as hung"):
            run_stage.fn("train", str(tmp_path), timeout=2)
    assert time.monotonic() - started < 60


class SlowSamples(torch.utils.data.Dataset):
    """Two samples that take far longer than the loader's timeout (a stand-in for a hung worker)."""

    split_dir = "data/cache/slow"

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        time.sleep(10)
        return index


def test_a_hung_loader_worker_is_an_error_naming_what_it_read(monkeypatch):
    from segpipe.data import dataset

    monkeypatch.setattr(dataset, "WORKER_TIMEOUT_S", 3)
    loader = dataset.data_loader(SlowSamples(), 1, batch_size=1)
    with pytest.raises(SegpipeError, match="a DataLoader worker reading data/cache/slow sent no batch for 3 s"):
        list(loader)
