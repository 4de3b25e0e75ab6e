"""The inference cost of an exported model: parameters, GFLOPs (``torch.utils.flop_counter``: a multiply-add is 2
FLOPs) at the training size and at the serving size, and for each runtime on this machine the latency p50 / p95 at
batch 1, the throughput at batch 8 and the peak memory while it ran (the process's resident set on CPU,
``torch.cuda.max_memory_allocated`` for PyTorch on a GPU)."""

from __future__ import annotations

import copy
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segpipe.cpu_info import cpu_name

Runner = Callable[[torch.Tensor], object]
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``example``, as PyTorch's flop counter counts them."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example)
    return int(counter.get_total_flops())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_MB


class PeakResidentSet:
    """The largest resident set of this process while the block runs, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.peak_mb = _rss_mb()
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self) -> PeakResidentSet:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def timed_ms(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall milliseconds of ``runs`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def runtimes(module: nn.Module, onnx_path: Path,
             cpu: ort.InferenceSession | None = None) -> dict[str, tuple[Runner, str]]:
    """Each runtime available here, as a function of a CPU batch, and the device it runs on; ``cpu``: an
    onnxruntime CPU session of ``onnx_path`` already open."""
    found: dict[str, tuple[Runner, str]] = {"eager_cpu": (module, "cpu")}
    cpu = cpu or ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = cpu.get_inputs()[0].name
    found["onnxruntime_cpu"] = (lambda x: cpu.run(None, {name: x.numpy()}), "cpu")
    if torch.cuda.is_available():
        on_gpu = copy.deepcopy(module).to("cuda")

        def eager_cuda(x: torch.Tensor) -> object:
            out = on_gpu(x.to("cuda"))
            torch.cuda.synchronize()
            return out

        found["eager_cuda"] = (eager_cuda, "cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        gpu = ort.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
        found["onnxruntime_cuda"] = (lambda x: gpu.run(None, {name: x.numpy()}), "cuda")
    return found


def measure(run: Runner, device: str, single: torch.Tensor, batch: torch.Tensor | None, runs: int) -> dict[str, Any]:
    """p50 / p95 ms at batch 1, images per second at the batch (or one image after another when the model takes
    one image at a time: ``batch`` None), and the peak memory."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), PeakResidentSet() as memory:
        single_ms = timed_ms(lambda: run(single), runs)
        if batch is not None:
            batch_ms = statistics.median(timed_ms(lambda: run(batch), max(1, runs // 4)))
            images_per_s = batch.shape[0] / (batch_ms / 1000)
        else:
            images_per_s = 1000 / statistics.median(single_ms)
    figures = {"p50_ms": round(percentile(single_ms, 50), 3), "p95_ms": round(percentile(single_ms, 95), 3),
               "images_per_s": round(images_per_s, 2), "peak_rss_mb": round(memory.peak_mb, 1)}
    if device == "cuda":
        figures["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return figures


def cost_report(module: nn.Module, onnx_path: Path, example: torch.Tensor, train_size: list[int] | None,
                size: list[int] | None, runs: int, batch_size: int, batches: bool,
                session: ort.InferenceSession | None = None) -> dict[str, Any]:
    """The cost report of ``module`` (the traced module, on CPU) and its export ``onnx_path``. ``example`` is a
    normalised test image; the runtimes are timed on it resized to ``size`` (default: its own size).
    ``batches``: whether the model takes more than one image per call (else throughput is one after another);
    ``session``: an onnxruntime CPU session of ``onnx_path`` to reuse."""
    module = module.eval()
    height, width = size or list(example.shape[-2:])
    single = torch.nn.functional.interpolate(example, size=(height, width), mode="bilinear", align_corners=False)
    train_hw = list(train_size or example.shape[-2:])
    at_train = torch.nn.functional.interpolate(example, size=tuple(train_hw), mode="bilinear", align_corners=False)
    batch = single.repeat(batch_size, 1, 1, 1) if batches else None
    report = {"parameters": parameter_count(module),
              "gflops_at_train_size": count_flops(module, at_train) / 1e9, "train_size": train_hw,
              "gflops_at_size": count_flops(module, single) / 1e9, "size": [height, width],
              "batch_size": batch_size if batches else 1, "runs": runs, "torch_threads": torch.get_num_threads(),
              "cpu": cpu_name()}
    report["runtimes"] = {name: measure(run, device, single, batch, runs)
                          for name, (run, device) in runtimes(module, onnx_path, session).items()}
    return report


def cost_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The cost report's figures as flat metric names (``export_cost_onnxruntime_cpu_p50_ms``, ...)."""
    metrics = {f"export_cost_{key}": float(report[key])
               for key in ("parameters", "gflops_at_train_size", "gflops_at_size")}
    for runtime, figures in report["runtimes"].items():
        metrics.update({f"export_cost_{runtime}_{name}": float(value) for name, value in figures.items()})
    return metrics
