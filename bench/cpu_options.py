"""CPU training options beyond the step path, each measured against the path ``auto`` picks, in one run:

- ``torch.compile`` (inductor) of the model: its compile time (the first step), its step time after warm-up, and
  how many steps the compile needs to pay for itself, against camvid-cpu's whole run (46 epochs of 46 steps);
- the loader workers (``train.loader_workers`` 0, 1, 2) for whole epochs (training and validation) of
  camvid-cpu's length (46 steps) and augmentation on synthetic 360x480 scenes: does the data loading keep up
  with the steps, and do the workers slow the steps down by taking cores from them.

The steps run through the train stage's own code, as in :mod:`bench.step_paths`.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.step_paths import BATCH, project_params, trainer_for
from segpipe.data.dataset import data_loader
from segpipe.engine import train_one_epoch
from segpipe.fsutil import working_directory
from segpipe.params import parse_params
from segpipe.paths import CACHE
from segpipe.training import Trainer
from tests.conftest import DATA_STAGES, run_stages

CAMVID_CPU_STEPS = 46 * 46  # camvid-cpu: 46 epochs of 367 samples at batch 8
COMPILE_ROWS: dict[str, dict[str, Any]] = {
    "lraspp_mobilenet_v3_large": {"name": "lraspp_mobilenet_v3_large"},
    "unet": {"name": "unet"},
    "unet (residual)": {"name": "unet", "unet": {"residual": True}},
}


def _step_times(net: torch.nn.Module, trainer: Trainer, batch: dict, steps: int) -> list[float]:
    settings = replace(trainer.settings, max_steps=1)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        train_one_epoch(net, [batch], trainer.criterion, trainer.optimizer, trainer.scheduler, None, settings,
                        trainer.runtime, "step")
        times.append(time.perf_counter() - started)
    return times


def compile_row(model: dict[str, Any], folder: Path, warmup: int, steps: int) -> dict[str, Any]:
    """Eager against ``torch.compile`` for one model on its auto step path (one process: the eager steps first)."""
    params = project_params("semantic", model)
    folder.mkdir(parents=True, exist_ok=True)
    with working_directory(folder):
        if not (folder / CACHE).is_dir():
            run_stages(params, DATA_STAGES)
        trainer = trainer_for("semantic", params)
        loader = data_loader(trainer.train_set, 0, batch_size=BATCH, drop_last=True, collate_fn=trainer.task.collate)
        batch = next(iter(loader))
        if trainer.settings.channels_last:
            trainer.model.to(memory_format=torch.channels_last)
        eager = statistics.median(_step_times(trainer.net, trainer, batch, warmup + steps)[warmup:])
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / f"inductor-{len(list(folder.glob('inductor-*')))}")
        compiled_net = torch.compile(trainer.net)  # a cold compile: its own, empty cache
        compiled = _step_times(compiled_net, trainer, batch, 1 + warmup + steps)
    compile_s, compiled_step = compiled[0], statistics.median(compiled[1 + warmup:])
    saved = eager - compiled_step
    return {"path": {"channels_last": trainer.settings.channels_last, "amp": trainer.settings.amp},
            "eager_ms": round(eager * 1000, 1), "compiled_ms": round(compiled_step * 1000, 1),
            "compile_s": round(compile_s, 1), "speedup": round(eager / compiled_step, 3),
            "steps_to_pay_back": round(compile_s / saved) if saved > 0 else None,
            "pays_back_within_camvid_cpu": saved > 0 and compile_s / saved < CAMVID_CPU_STEPS}


def loader_rows(folder: Path, epochs: int) -> dict[str, Any]:
    """Whole epochs (train and validation) of LRASPP with camvid-cpu's augmentation, per number of loader
    workers: the median epoch, and the training images per second within it."""
    base = project_params("semantic", {"name": "lraspp_mobilenet_v3_large"}).model_dump(mode="json")
    base["ingest"]["synthetic"] = {"num_samples": 96, "size": [360, 480], "max_things": 4}
    base["train"]["samples_per_epoch"] = 368  # camvid-cpu's epoch: 46 steps of 8
    base["augment"].update({"crop_size": [256, 256], "scale": [0.2, 0.6], "hflip": 0.5,
                            "color_jitter": {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
                                             "hue": 0.0}})
    rows = {}
    folder.mkdir(parents=True, exist_ok=True)
    with working_directory(folder):
        for workers in (0, 1, 2):
            base["train"]["loader_workers"] = workers
            params = parse_params(base)
            if not (folder / CACHE).is_dir():
                run_stages(params, DATA_STAGES)
            trainer = trainer_for("semantic", params)
            trainer.run_epoch(0)  # warm-up: first-touch of the cache, oneDNN's kernels, the worker fork server
            seconds, images_per_s = [], []
            for epoch in range(1, epochs + 1):
                started = time.perf_counter()
                images_per_s.append(trainer.run_epoch(epoch)["images_per_s"])
                seconds.append(time.perf_counter() - started)
            rows[f"loader_workers={workers}"] = {"epoch_s": round(statistics.median(seconds), 2),
                                                 "train_images_per_s": round(statistics.median(images_per_s), 1),
                                                 "train_samples": len(trainer.train_set),
                                                 "val_samples": len(trainer.val_set)}
    fastest = min(rows, key=lambda name: rows[name]["epoch_s"])
    return {"rows": rows, "fastest": fastest}


def measure_cpu_options(folder: Path, warmup: int = 3, steps: int = 8, epochs: int = 3) -> dict[str, Any]:
    """The torch.compile table of :data:`COMPILE_ROWS` and the loader-worker table."""
    compiled = {}
    for name, model in COMPILE_ROWS.items():
        compiled[name] = compile_row(model, folder / "compile", warmup, steps)
        print(name, compiled[name], flush=True)
    loaders = loader_rows(folder / "loader", epochs)
    print("loader workers", loaders, flush=True)
    return {"what": f"torch.compile against eager at batch {BATCH} of 256x256 (median step after {warmup} warm-up "
                    f"steps; compile_s is the first compiled step); whole epochs of LRASPP per loader workers with "
                    f"camvid-cpu's length and augmentation on 360x480 synthetic scenes, on the CPU with "
                    f"{torch.get_num_threads()} threads",
            "torch_compile": compiled, "loader_workers": loaders}
