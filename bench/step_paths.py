"""The training step of every model family on this machine's device, per step path (memory layout and precision),
against today's path (contiguous NCHW in fp32), measured in one run: each model's fastest path (``fastest``) is
what ``train.channels_last: auto`` and ``train.amp: auto`` pick for it on the CPU (the catalog's ``cpu_channels_last``
and ``cpu_bf16``; tests/test_step_path.py holds the two together).

Each model trains through the train stage's own code (:class:`segpipe.training.Trainer` and
:func:`segpipe.engine.train_one_epoch`) on a batch of synthetic 256x256 scenes of its task, held in memory so that
only the step is timed: the median of ``steps`` steps after ``warmup`` steps, per path.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from segpipe.cpu_info import native_bf16
from segpipe.data.dataset import data_loader
from segpipe.distributed import init_runtime
from segpipe.engine import train_one_epoch
from segpipe.fsutil import working_directory
from segpipe.params import Params, parse_params
from segpipe.paths import CACHE, SPLIT
from segpipe.pretraining import PretrainLearner
from segpipe.training import Trainer
from stages.pretrain import pretrain_params
from tests.conftest import DATA_STAGES, run_stages

SIZE = 256
BATCH = 8
PATHS = {"today": (False, "off"), "channels_last": (True, "off"), "bf16": (False, "bf16"),
         "channels_last+bf16": (True, "bf16")}
MARGIN = 1.05  # a path is taken when its step is at least 5 % faster than today's (step times vary by ~2 %)
# table row -> (task, model section; pretrain: the autoencoder of that model's encoder)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet": ("semantic", {"name": "unet"}),
    "unet (residual)": ("semantic", {"name": "unet", "unet": {"residual": True}}),
    "lraspp_mobilenet_v3_large": ("semantic", {"name": "lraspp_mobilenet_v3_large"}),
    "deeplabv3_mobilenet_v3_large": ("semantic", {"name": "deeplabv3_mobilenet_v3_large"}),
    "fcn_resnet50": ("semantic", {"name": "fcn_resnet50"}),
    "deeplabv3_resnet50": ("semantic", {"name": "deeplabv3_resnet50"}),
    "maskrcnn_resnet18_fpn": ("instance", {"name": "maskrcnn_resnet18_fpn",
                                           "mask_rcnn": {"min_size": SIZE, "max_size": SIZE}}),
    "panoptic_deeplab_unet": ("panoptic", {"name": "panoptic_deeplab_unet"}),
    "panoptic_fpn_resnet18": ("panoptic", {"name": "panoptic_fpn_resnet18",
                                           "mask_rcnn": {"min_size": SIZE, "max_size": SIZE}}),
    "pretrain autoencoder (lraspp_mobilenet_v3_large encoder)": ("pretrain", {"name": "lraspp_mobilenet_v3_large"}),
    "pretrain autoencoder (unet encoder)": ("pretrain", {"name": "unet"}),
}


def project_params(task: str, model: dict[str, Any]) -> Params:
    return parse_params({
        "task": "semantic" if task == "pretrain" else task,
        "base": {"seed": 0, "workers": 1, "device": "cpu"},
        "ingest": {"synthetic": {"num_samples": 24, "size": [SIZE, SIZE], "max_things": 4}},
        "augment": {"crop_size": [SIZE, SIZE], "scale": [0.8, 1.0], "rotation": 0, "preview_samples": 1},
        "model": model,
        "train": {"epochs": 1000, "batch_size": BATCH, "loader_workers": 0},  # a schedule longer than the bench
        "pretrain": {"enabled": task == "pretrain", "batch_size": BATCH, "epochs": 1000},
    })


def trainer_for(task: str, params: Params) -> Trainer:
    runtime = init_runtime("cpu")
    if task == "pretrain":
        return Trainer(pretrain_params(params), CACHE, SPLIT, runtime, PretrainLearner.from_params(params),
                       stage="pretrain")
    return Trainer(params, CACHE, SPLIT, runtime)


def step_ms(trainer: Trainer, batch: dict, channels_last: bool, amp: str, warmup: int, steps: int) -> float:
    """The median wall time of one training step on ``batch`` with this layout and precision."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    trainer.model.to(memory_format=layout)
    settings = replace(trainer.settings, channels_last=channels_last, amp=amp, max_steps=1)
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        train_one_epoch(trainer.net, [batch], trainer.criterion, trainer.optimizer, trainer.scheduler, None,
                        settings, trainer.runtime, "step")
        if step >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def one_row(task: str, model: dict[str, Any], folder: Path, warmup: int, steps: int) -> dict[str, Any]:
    params = project_params(task, model)
    folder.mkdir(parents=True, exist_ok=True)
    with working_directory(folder):
        if not (folder / CACHE).is_dir():
            run_stages(params, DATA_STAGES)
        trainer = trainer_for(task, params)
        loader = data_loader(trainer.train_set, 0, batch_size=BATCH, drop_last=True, collate_fn=trainer.task.collate)
        batch = next(iter(loader))
        row: dict[str, Any] = {}
        for name, (channels_last, amp) in PATHS.items():
            try:
                row[f"{name}_ms"] = step_ms(trainer, batch, channels_last, amp, warmup, steps)
            except Exception as exc:  # noqa: BLE001 - a path a model cannot take is a figure of the table too
                row[f"{name}_ms"] = None
                row[f"{name}_error"] = str(exc).splitlines()[0][:200]
    today = row["today_ms"]
    for name in PATHS:
        if name != "today" and row[f"{name}_ms"]:
            row[f"{name}_speedup"] = round(today / row[f"{name}_ms"], 3)
    return row


def measured_choice(row: dict[str, Any]) -> dict[str, bool]:
    """The layout and precision of the fastest path of ``row``, or today's when none beats it by :data:`MARGIN`:
    what the model's catalog entry records (``cpu_channels_last``, ``cpu_bf16``)."""
    fastest = min((name for name in PATHS if row.get(f"{name}_ms")), key=lambda name: row[f"{name}_ms"])
    if row["today_ms"] < MARGIN * row[f"{fastest}_ms"]:
        fastest = "today"
    channels_last, amp = PATHS[fastest]
    return {"channels_last": channels_last, "bf16": amp == "bf16"}


def measure_step_paths(folder: Path, warmup: int = 2, steps: int = 5) -> dict[str, Any]:
    """The step-path table of every row of :data:`ROWS`, with what the catalog now picks for each."""
    rows = {}
    for name, (task, model) in ROWS.items():
        rows[name] = one_row(task, model, folder / (task if task != "pretrain" else "semantic"), warmup, steps)
        rows[name]["fastest"] = measured_choice(rows[name])
        print(name, rows[name], flush=True)
    return {"what": f"median training step (forward, loss, backward, optimizer) at batch {BATCH} of {SIZE}x{SIZE} "
                    f"synthetic scenes, on the CPU with {torch.get_num_threads()} threads, per step path",
            "native_bf16": native_bf16(), "margin": MARGIN, "warmup_steps": warmup, "timed_steps": steps,
            "models": rows}
