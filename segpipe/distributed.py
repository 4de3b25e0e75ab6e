"""Device choice and torch.distributed set-up for runs started with or without ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from segpipe.errors import SegpipeError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` processes and its torch device."""

    rank: int
    world_size: int
    device: torch.device
    local_rank: int = 0  # among the processes of this machine (torchrun's LOCAL_RANK)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_machine_main(self) -> bool:
        """The first process on this machine: it writes what every process here reads (each node has its own disk)."""
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise SegpipeError("base.device is 'cuda' but no CUDA device is visible; set base.device: auto or cpu")
    if setting in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_runtime(device_setting: str) -> Runtime:
    """Join the process group when started by torchrun (NCCL on GPU, gloo on CPU); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_setting, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, world_size, device, local_rank)


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    """Wait until every process got here (a no-op in a single process): what rank 0 writes, the others may read."""
    if runtime.distributed and dist.is_initialized():
        dist.barrier()


def broadcast_from_main(value: Any, runtime: Runtime) -> Any:
    """``value`` as the main process has it, in every process (it alone may read a file that only its machine
    holds, such as the training checkpoint on a multi-node run); unchanged in a single process."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=runtime.device if runtime.device.type == "cuda" else None)
    return box[0]


def sync_buffers(model: torch.nn.Module, runtime: Runtime) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process, so all evaluate the same model.

    DDP broadcasts buffers at the start of each training forward, so after the last step each rank holds
    statistics updated by its own last batch.
    """
    if runtime.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a small tensor over the processes of the current group (unchanged without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    total = values.to("cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(total)
    return total.cpu()
