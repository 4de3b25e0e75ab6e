"""How a training step runs on its device: the memory layout (channels_last or not) and the mixed precision.

``train.channels_last`` and ``train.amp`` name them, or say ``auto``: on CUDA, channels_last with bf16 (fp16 on a
GPU without bf16); on the CPU, what the catalog entry of the model records as faster there, measured by
``bench/train_throughput.py`` (``bench/results/train_throughput.json``), bf16 only on a CPU with native BF16
instructions. fp16 runs on CUDA only; on the CPU it trains in fp32 and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segpipe.catalog import MODELS
from segpipe.cpu_info import native_bf16
from segpipe.engine import StepSettings
from segpipe.params.training import TrainParams


@dataclass(frozen=True)
class StepPath:
    """The resolved layout and precision of the training steps, and why they were chosen."""

    channels_last: bool
    amp: str  # off | bf16 | fp16
    reason: str

    def settings(self, device_transform: nn.Module, grad_clip: float | None = None,
                 max_steps: int | None = None) -> StepSettings:
        """The engine's settings for steps on this path (training or, without clip and step cap, evaluation)."""
        return StepSettings(device_transform, self.amp, self.channels_last, grad_clip, max_steps)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous (NCHW)"
        precision = "fp32" if self.amp == "off" else f"{self.amp} autocast"
        return f"{layout}, {precision} ({self.reason})"


def choose_step_path(train: TrainParams, device: torch.device, model_name: str) -> StepPath:
    """The step path for ``model_name`` training on ``device`` under the ``train`` params."""
    if device.type == "cuda":
        auto_amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        channels_last = True if train.channels_last == "auto" else train.channels_last
        return StepPath(channels_last, auto_amp if train.amp == "auto" else train.amp,
                        "auto on CUDA" if "auto" in (train.amp, train.channels_last) else "as the params say")
    entry = MODELS.get(model_name)
    notes = []
    if train.channels_last == "auto":
        channels_last = bool(entry and entry.cpu_channels_last)
        notes.append(f"layout auto: {'faster' if channels_last else 'not faster'} for {model_name} on the CPU")
    else:
        channels_last = train.channels_last
    if train.amp == "auto":
        amp = "bf16" if entry and entry.cpu_bf16 and native_bf16() else "off"
        notes.append(f"amp auto: {'bf16' if amp == 'bf16' else 'fp32'} for {model_name} on "
                     f"{'this CPU (native BF16)' if native_bf16() else 'a CPU without native BF16'}")
    elif train.amp == "fp16":
        amp = "off"
        notes.append("amp fp16 runs on CUDA only: fp32 on the CPU")
    else:
        amp = train.amp
    return StepPath(channels_last, amp, "; ".join(notes) or "as the params say")
