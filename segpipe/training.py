"""Fitting a model of any task on the training cache: resumable, seeded, optionally distributed."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, Dataset, Subset

from segpipe import checkpoint
from segpipe.catalog import weights_file
from segpipe.data.canonical import Categories
from segpipe.data.dataset import CachedSegmentation
from segpipe.data.split import labelled_subset
from segpipe.distributed import Runtime, broadcast_from_main, sync_buffers
from segpipe.engine import eval_loader, train_loader, train_one_epoch, validate
from segpipe.errors import SegpipeError
from segpipe.models.encoders import encoder_of
from segpipe.optim import build_optimizer, build_scheduler
from segpipe.params import Params
from segpipe.paths import AUGMENT_POLICY
from segpipe.progress import duration
from segpipe.step_path import choose_step_path
from segpipe.tasks import get_task
from segpipe.tasks.base import Learner
from segpipe.transforms import build

EpochCallback = Callable[["FitState", dict[str, Any]], None]
StopCheck = Callable[[int, dict[str, Any]], bool]  # (epoch, history row) -> stop now (a sweep's pruner)


@dataclass
class FitState:
    """Everything that a resumed run needs besides the model, optimizer, scheduler and scaler."""

    epoch: int = 0
    best_score: float = -1.0  # the best val_<task objective> so far
    best_epoch: int = -1
    stale_epochs: int = 0
    pruned_epoch: int | None = None  # the epoch after which a sweep's pruner stopped the run
    history: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None


def initial_weights_files(weights: str | None) -> tuple[Path, ...]:
    """The files a model starts from under ``model.weights``: the pretrain stage's output, or a checkpoint path
    (none from scratch; torchvision's published weights are fixed by their name)."""
    start = weights_file(weights)
    return (start,) if start else ()


def epoch_samples(parts: list[CachedSegmentation], labelled: set[str], samples: int | None) -> Dataset:
    """What one epoch draws from the cached splits ``parts``: the samples of the first (the train split) whose
    labels are in use (``labelled`` ids; train.label_fraction) and all of the others (pretraining's extra images),
    each once, or in turn up to ``samples`` (train.samples_per_epoch)."""
    data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    first = parts[0].sample_ids
    keep = [i for i, sample_id in enumerate(first) if sample_id in labelled] + list(range(len(first), len(data)))
    if not keep:
        raise SegpipeError(f"no labelled samples of {parts[0].split_dir} are in the train split; run: dvc repro")
    if samples is None and len(keep) == len(data):
        return data
    order = keep if samples is None else [keep[i % len(keep)] for i in range(samples)]
    return Subset(data, order)


class Trainer:
    """Owns the model, optimizer, schedule and loaders of one training run."""

    def __init__(self, params: Params, cache_dir: Path, split_dir: Path, runtime: Runtime,
                 learner: Learner | None = None, train_splits: tuple[str | Path, ...] = ("train",),
                 stage: str = "train") -> None:
        """``learner``: what to train (the task of ``params.task`` unless given); ``train_splits``: the cached
        splits it trains on, by name or folder (validation is always the val split); ``stage`` names it in the
        log lines."""
        self.params, self.runtime, self.stage = params, runtime, stage
        self.policy = json.loads((cache_dir / AUGMENT_POLICY.name).read_text())
        self.categories = Categories.load(cache_dir / "categories.json")
        self.task = task = learner or get_task(params.task)
        self.config = task.model_config(params, self.categories)
        torch.manual_seed(params.base.seed)
        model = task.build_model(self.config, params.model.weights).to(runtime.device)
        self.step_path = choose_step_path(params.train, runtime.device, params.model.name)
        if self.step_path.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.net = DistributedDataParallel(model) if runtime.distributed else model
        self.frozen = False  # the encoder's weights are fixed for the first train.freeze_encoder_epochs epochs
        self.encoder_params = [p for p in encoder_of(model).module.parameters() if p.requires_grad] \
            if params.train.freeze_encoder_epochs else []
        ignore = self.categories.ignore_index
        sample_transform = build(self.policy["sample"], ignore, task.with_instances, params.augment.min_instance_pixels)
        parts = [CachedSegmentation(cache_dir / name, sample_transform, task.with_instances) for name in train_splits]
        split_train = pd.read_parquet(split_dir / "train.parquet")
        self.train_images = len(split_train)  # labelled or not
        self.labelled = labelled_subset(split_train, params.train.label_fraction, params.split.stratify,
                                        params.base.seed)
        self.train_set = epoch_samples(parts, set(self.labelled.sample_id), params.train.samples_per_epoch)
        self.val_set = CachedSegmentation(cache_dir / "val", instances=task.with_instances)
        self.batch_size = max(1, params.train.batch_size // runtime.world_size)
        steps = len(train_loader(self.train_set, self.batch_size, 0, 0, 0, runtime))
        self.steps_per_epoch = min(steps, params.train.max_steps_per_epoch or steps)
        self.criterion = task.criterion(params, self.categories, self.labelled).to(runtime.device)
        self.optimizer = build_optimizer(self.model, params.train.optimizer)
        self.scheduler = build_scheduler(self.optimizer, params.train.schedule,
                                         self.steps_per_epoch * params.train.epochs, self.steps_per_epoch)
        path = self.step_path
        self.scaler = torch.amp.GradScaler("cuda") if path.amp == "fp16" else None
        self.settings = path.settings(build(self.policy["device_train"], ignore), params.train.grad_clip,
                                      params.train.max_steps_per_epoch)
        self.eval_settings = path.settings(build(self.policy["device_eval"], ignore))

    def state_dict(self, state: FitState, fingerprint: str) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
            "fit": copy.deepcopy(state.__dict__), "fingerprint": fingerprint, "rng": rng,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> FitState:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler and saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"]["torch"])
        return FitState(**saved["fit"])

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch and validate; every random draw depends only on (seed, epoch)."""
        params, runtime = self.params, self.runtime
        torch.manual_seed(params.base.seed * 1_000 + epoch)
        task, collate = self.task, self.task.collate
        self._freeze_encoder(epoch < params.train.freeze_encoder_epochs)
        loader = train_loader(self.train_set, self.batch_size, params.train.loader_workers, params.base.seed,
                              epoch, runtime, collate)
        train = train_one_epoch(self.net, loader, self.criterion, self.optimizer, self.scheduler, self.scaler,
                                self.settings, runtime, f"epoch {epoch + 1}/{params.train.epochs}")
        sync_buffers(self.model, runtime)
        val_loader = eval_loader(self.val_set, self.batch_size, params.train.loader_workers, runtime, collate)
        evaluator = task.validation_evaluator(self.categories, self.criterion, self.config)
        val = validate(self.model, val_loader, task, evaluator, self.eval_settings, runtime)
        images_per_s = train.pop("images_per_s")
        return {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()}, "lr": self.optimizer.param_groups[0]["lr"],
                "images_per_s": images_per_s}

    def _freeze_encoder(self, frozen: bool) -> None:
        """Fix or free the encoder's weights (no gradients, so the optimizer leaves them, weight decay included);
        DDP is wrapped again, as it only synchronises the parameters that need gradients when it is built."""
        if frozen == self.frozen:
            return
        for parameter in self.encoder_params:
            parameter.requires_grad_(not frozen)
        self.frozen = frozen
        if self.runtime.distributed:
            self.net = DistributedDataParallel(self.model)

    @property
    def objective(self) -> str:
        """The history column that picks the best epoch and stops early: val_<the task's objective>."""
        return f"val_{self.task.objective}"


def resume_state(trainer: Trainer, path: Path, fingerprint: str) -> tuple[FitState, dict | None, str]:
    """The saved state when ``path`` holds a checkpoint of this very run, else a fresh one (and why). Only the main
    process writes checkpoints, on its own machine, so it reads them and gives every process the same state."""
    saved = broadcast_from_main(checkpoint.load(path) if trainer.runtime.is_main and path.is_file() else None,
                                trainer.runtime)
    if saved is None:
        return FitState(), None, "starting"
    if saved.get("fingerprint") != fingerprint:
        return FitState(), None, f"ignoring {path} (other params or data); starting"
    state = trainer.load_state_dict(saved)
    return state, saved.get("best_model"), f"resuming after epoch {state.epoch} from {path};"


def kept_epoch_summary(state: FitState, objective: str) -> dict[str, Any]:
    """The epoch that models/model.pt holds and its validation metrics (what a sweep selects on), with the epochs
    run (fewer than train.epochs after early stopping or pruning) and whether a sweep's pruner stopped it."""
    kept = next(row for row in state.history if row["epoch"] == state.best_epoch)
    return {"objective": objective, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
            "pruned": state.pruned_epoch is not None, "pruned_epoch": state.pruned_epoch,
            **{key: value for key, value in kept.items() if key.startswith("val_")}}


def epoch_line(row: dict[str, Any], epochs: int, seconds_per_epoch: float, stage: str = "train") -> str:
    """One line per epoch for logs: losses, validation metrics, speed and the time left."""
    left = duration(seconds_per_epoch * (epochs - row["epoch"]))
    values = " ".join(f"{k} {v:.4f}" for k, v in row.items()
                      if k.startswith(("train_", "val_")) and not k.endswith(("_small", "_medium", "_large"))
                      and not k.startswith(("val_sq_", "val_rq_")))
    return (f"{stage}: epoch {row['epoch']}/{epochs} {values} | "
            f"{row['images_per_s']:.1f} img/s | {duration(seconds_per_epoch)}/epoch, ETA {left}")


STEPS_TAG = "segpipe.steps"  # the MLflow tag of the step path a training ran on (``StepPath.describe``)


def fit(trainer: Trainer, checkpoint_path: Path, fingerprint: str, on_start: Callable[[FitState], None],
        on_epoch: EpochCallback, should_stop: StopCheck | None = None) -> tuple[FitState, dict[str, torch.Tensor]]:
    """Train until ``train.epochs``, early stopping or, for a sweep trial (``train.trial``), ``should_stop`` (given
    to and asked by the main process after each epoch, its answer sent to all); checkpoint after every epoch; return
    the best weights."""
    params, runtime = trainer.params, trainer.runtime
    state, best_model, how = resume_state(trainer, checkpoint_path, fingerprint)
    if runtime.is_main:
        print(f"{trainer.stage}: {how} {trainer.config['name']} on {runtime.device} x{runtime.world_size}, "
              f"{len(trainer.train_set)} train samples and {len(trainer.val_set)} val images, "
              f"{trainer.steps_per_epoch} steps per epoch; steps: {trainer.step_path.describe()}")
    on_start(state)
    stopping = params.train.early_stopping
    started, first_epoch = time.monotonic(), state.epoch
    while state.epoch < params.train.epochs:
        row = trainer.run_epoch(state.epoch)
        state.epoch += 1
        if row[trainer.objective] > state.best_score + stopping.min_delta:
            state.best_score, state.best_epoch, state.stale_epochs = row[trainer.objective], state.epoch, 0
            best_model = copy.deepcopy(trainer.model.state_dict())
        else:
            state.stale_epochs += 1
        state.history.append(row)
        if runtime.is_main:
            saved = trainer.state_dict(state, fingerprint)
            saved["best_model"] = best_model
            checkpoint.save(saved, checkpoint_path)
            on_epoch(state, row)
            per_epoch = (time.monotonic() - started) / (state.epoch - first_epoch)
            print(epoch_line(row, params.train.epochs, per_epoch, trainer.stage), flush=True)
        asked = runtime.is_main and should_stop is not None and should_stop(state.epoch, row)
        if params.train.trial.study and broadcast_from_main(asked, runtime):  # every rank takes part
            state.pruned_epoch = state.epoch
            if runtime.is_main:
                print(f"{trainer.stage}: pruned after epoch {state.epoch} by the sweep's pruner (the trial's "
                      f"{trainer.objective} trails the others' at this epoch)")
            break
        if stopping.patience and state.stale_epochs >= stopping.patience:
            if runtime.is_main:
                print(f"{trainer.stage}: early stop after epoch {state.epoch}: no {trainer.task.objective_label} "
                      f"gain for {stopping.patience} epochs")
            break
    return state, best_model
