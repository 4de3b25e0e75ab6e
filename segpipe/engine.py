"""The training and validation loops (one epoch each), read top to bottom."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from segpipe.data.dataset import data_loader
from segpipe.distributed import Runtime, reduce_sum
from segpipe.errors import SegpipeError
from segpipe.evaluation import Evaluator, inference_on_dataset
from segpipe.progress import progress
from segpipe.tasks.base import Criterion, Learner

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepSettings:
    """How each step runs: device-side transform, mixed precision, memory format, clipping, step cap."""

    device_transform: nn.Module
    amp: str  # off | bf16 | fp16, as resolved for the device (segpipe.step_path)
    channels_last: bool
    grad_clip: float | None
    max_steps: int | None

    def autocast(self, device: torch.device):
        if self.amp in AMP_DTYPES:
            return torch.autocast(device.type, dtype=AMP_DTYPES[self.amp])
        return nullcontext()


def train_loader(dataset: Dataset, batch_size: int, workers: int, seed: int, epoch: int,
                 runtime: Runtime, collate_fn=None) -> DataLoader:
    """A shuffled loader whose order and augmentation depend only on (seed, epoch): resumable exactly."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    sampler = None
    if runtime.distributed:
        sampler = DistributedSampler(dataset, runtime.world_size, runtime.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    return data_loader(dataset, workers, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                       generator=generator, drop_last=len(dataset) > batch_size * runtime.world_size,
                       pin_memory=runtime.device.type == "cuda", collate_fn=collate_fn)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, runtime: Runtime, collate_fn=None) -> DataLoader:
    """An ordered loader over this process's share (every sample counted exactly once across processes)."""
    shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size)) if runtime.distributed else dataset
    return data_loader(shard, workers, batch_size=batch_size, pin_memory=runtime.device.type == "cuda",
                       collate_fn=collate_fn)


def _images(batch: dict, settings: StepSettings, device: torch.device) -> torch.Tensor:
    images = settings.device_transform(batch["image"].to(device, non_blocking=True))
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: Criterion, optimizer: torch.optim.Optimizer,
                    scheduler, scaler: torch.amp.GradScaler | None, settings: StepSettings, runtime: Runtime,
                    description: str) -> dict[str, float]:
    """One pass over ``loader``: the mean ``loss`` (the sum of the criterion's terms) and, when there are several,
    of each term, over all processes; and images per second."""
    model.train()
    total = len(loader) if settings.max_steps is None else min(len(loader), settings.max_steps)
    bar = progress(total, description, unit="step", enabled=runtime.is_main, leave=False)
    totals: dict[str, float] = {}  # name -> value * images
    images_seen = 0
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        if step >= total:
            break
        images = _images(batch, settings, runtime.device)
        with settings.autocast(runtime.device):
            terms = criterion(model, images, batch)
            loss = sum(terms.values())
        check_finite(loss, terms, runtime, f"{description}, step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        for name, value in ({"loss": loss, **terms} if len(terms) > 1 else {"loss": loss}).items():
            totals[name] = totals.get(name, 0.0) + value.item() * len(images)
        images_seen += len(images)
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{images_seen / (time.perf_counter() - start):.1f}")
    bar.close()
    elapsed = time.perf_counter() - start
    sums = reduce_sum(torch.tensor([*totals.values(), images_seen], dtype=torch.float64))
    count = max(float(sums[-1]), 1.0)
    means = {name: float(sums[i] / count) for i, name in enumerate(totals)}
    return {**means, "images_per_s": float(sums[-1] / max(elapsed, 1e-9))}


def check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], runtime: Runtime, where: str) -> None:
    """Stop at once when the loss of any process is NaN or infinite (every process stops, none waits for the rest
    in the gradient reduce), naming the step and the terms that are not finite, before any weight is updated."""
    finite = torch.isfinite(loss.detach()).all()
    if runtime.distributed:
        finite = reduce_sum(torch.tensor([0.0 if finite else 1.0], dtype=torch.float64))[0] == 0
    if bool(finite):
        return
    values = {name: value.detach() for name, value in terms.items()}
    bad = [f"{name} {float(value)}" for name, value in values.items() if not torch.isfinite(value).all()]
    raise SegpipeError(f"the training loss is not finite at {where} ({', '.join(bad) or 'on another process'}); no "
                       f"model was saved. Lower train.optimizer.lr, set train.grad_clip, or check the labels")


def validate(model: nn.Module, loader: DataLoader, task: Learner, evaluator: Evaluator, settings: StepSettings,
             runtime: Runtime) -> dict[str, float]:
    """The task's validation metrics over ``loader``, combined over all processes."""
    model.eval()

    def forward(batch: dict) -> object:
        with settings.autocast(runtime.device):
            return task.forward_eval(model, _images(batch, settings, runtime.device))

    inference_on_dataset(loader, forward, evaluator)
    return evaluator.compute()
