"""Optimizer and per-iteration learning-rate schedule (with linear warmup) from params."""

from __future__ import annotations

import math

import torch
from torch import nn

from segpipe.params import OptimizerParams, ScheduleParams


def build_optimizer(model: nn.Module, params: OptimizerParams) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), AdamW or RMSprop; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if params.name == "sgd":
        return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum, nesterov=params.momentum > 0)
    if params.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=params.lr, momentum=params.momentum)
    return torch.optim.AdamW(groups, lr=params.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, params: ScheduleParams, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per iteration: warmup, then constant / poly / cosine; or one-cycle."""
    total_steps = max(total_steps, 1)
    warmup = min(int(params.warmup_epochs * steps_per_epoch), total_steps - 1)
    if params.name == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        pct = min(max(warmup / total_steps, 0.05), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=pct)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        if params.name == "poly":
            return (1 - progress) ** params.power
        if params.name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
