"""ONNX export with dynamic batch and spatial size, the input contract, and the onnxruntime parity check.

:func:`export_checked` is the one export-and-parity skeleton: it runs PyTorch on the parity inputs, refuses
outputs that are not finite, traces, runs onnxruntime on the same inputs and asks the task (an :class:`Exportable`)
only for what differs: its outputs, its dynamic axes, the input to trace on and how to compare the two runs."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from segpipe.data.imageio import sha256_file
from segpipe.errors import SegpipeError
from segpipe.fsutil import atomic_path
from segpipe.inference_cost import cost_report
from segpipe.params import Params

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel

INPUT = "images"  # every task's ONNX model takes normalised NCHW float images under this name
SPATIAL_AXES = {0: "batch", 2: "height", 3: "width"}

Run = list[np.ndarray]  # one input's outputs, in the ONNX model's output order


@dataclass
class ExportCheck:
    """The parity of the ONNX model with PyTorch: report fields, and why it failed (empty when it passed)."""

    report: dict[str, Any] = field(default_factory=dict)
    failure: str = ""
    summary: str = ""


class Exportable(ABC):
    """A task as export (and ``predict``, which runs the exported model) sees it."""

    output_names: tuple[str, ...]  # the ONNX model's outputs
    parity_blank_image: bool = False  # also compare the two runs on a blank image (detectors: usually no object)

    def onnx_names(self, config: dict[str, Any]) -> tuple[str, ...]:
        """The ONNX outputs of a model of ``config`` (the task's ``output_names`` unless its models differ)."""
        return self.output_names

    def onnx_module(self, model: nn.Module) -> nn.Module:
        """The module that export traces: one NCHW batch in, the ONNX model's outputs out."""
        return model

    @torch.no_grad()
    def onnx_outputs(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """What the ONNX model returns for ``images``, computed by PyTorch: one tensor per ONNX output."""
        outputs = self.onnx_module(model)(images)
        return list(outputs) if isinstance(outputs, tuple) else [outputs]

    @abstractmethod
    def dynamic_axes(self, config: dict[str, Any]) -> dict[str, dict[int, str]]:
        """The dynamic axes of the input and of every output of a model of ``config``."""

    def trace_input(self, config: dict[str, Any], inputs: list[torch.Tensor], torch_runs: list[Run]) -> torch.Tensor:
        """The parity input that export traces on (``torch_runs``: PyTorch's outputs on each)."""
        return inputs[0]

    @abstractmethod
    def compare(self, trained: TrainedModel, samples: list[dict[str, Any]], torch_runs: list[Run],
                onnx_runs: list[Run], params: Params) -> ExportCheck:
        """Compare PyTorch's and onnxruntime's runs on the parity inputs (the test ``samples``, whose ground truth a
        task may score both on, then the blank image if any): the report, and why it fails if it does."""

    @abstractmethod
    def output_contract(self, config: dict[str, Any]) -> dict[str, Any]:
        """The ``output`` part of export/model.json for a model of ``config``."""


def export_checked(trained: TrainedModel, samples: list[dict[str, Any]], inputs: list[torch.Tensor], path: Path,
                   params: Params) -> ExportCheck:
    """Write ``path`` as ONNX and check it with onnxruntime on ``inputs`` (the normalised images of the test
    ``samples``); the inference cost report (:mod:`segpipe.inference_cost`) joins the report when the check
    passes."""
    task, config = trained.task, trained.saved["config"]
    checked = [*inputs, torch.zeros_like(inputs[0])] if task.parity_blank_image else inputs
    torch_runs = [[t.numpy() for t in task.onnx_outputs(trained.model, images)] for images in checked]
    names = task.onnx_names(config)
    refuse_non_finite(names, torch_runs[:len(inputs)])
    example = task.trace_input(config, inputs, torch_runs)
    module = task.onnx_module(trained.model)
    export_onnx(module, path, example, params.export.opset, names, task.dynamic_axes(config))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_runs = [session.run(None, {INPUT: images.numpy()}) for images in checked]
    check = task.compare(trained, samples, torch_runs, onnx_runs, params)
    check.report["min_agreement"] = params.export.min_agreement
    if not check.failure:
        settings = params.export
        cost = cost_report(module, path, inputs[0], trained.saved.get("train_size"), settings.cost_size,
                           settings.latency_runs, settings.throughput_batch, 0 in task.dynamic_axes(config)[INPUT],
                           session)
        eager, onnx = cost["runtimes"]["eager_cpu"]["p50_ms"], cost["runtimes"]["onnxruntime_cpu"]["p50_ms"]
        check.report.update({"torch_cpu_ms": eager, "onnxruntime_cpu_ms": onnx, "onnxruntime_speedup": eager / onnx,
                             "latency_input_shape": [1, 3, *cost["size"]], "cost": cost})
    return check


def export_onnx(model: nn.Module, path: Path, example: Any, opset: int, output_names: tuple[str, ...],
                dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Write ``model`` as one self-contained ONNX file with the TorchScript-based exporter.

    That exporter is about 30x faster than the dynamo exporter for the semantic models, with the same graphs
    (parity ~1e-7), and it is the one that handles torchvision's detection models.
    """
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(model.eval(), (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=list(output_names), dynamic_axes=dynamic_axes)


def contract(trained: TrainedModel, onnx_file: Path, output: dict[str, Any]) -> dict:
    """The input/output contract written beside the ONNX file (export/model.json); its sha256 ties the two."""
    cats = trained.categories
    return {
        "format": "onnx",
        "file": onnx_file.name,
        "sha256": sha256_file(onnx_file),
        "task": trained.task.name,
        "model": trained.saved["config"],
        "input": {
            "name": INPUT, "dtype": "float32", "layout": "NCHW", "channel_order": "RGB",
            "preprocess": "decode to RGB uint8 (EXIF orientation applied), divide by 255, subtract mean, divide by std",
            "mean": trained.normalize["mean"], "std": trained.normalize["std"],
            "size_policy": "any batch, height and width (dynamic axes); whole image at its original size",
            "train_size": trained.saved.get("train_size"),
        },
        "output": output,
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color), "isthing": c.isthing} for c in cats.items],
        "ignore_index": cats.ignore_index,
    }


@dataclass
class Parity:
    images: int
    max_abs_logit_diff: float
    argmax_agreement: float


def logit_parity(expected: list[np.ndarray], got: list[np.ndarray]) -> Parity:
    """Compare NCHW logits of PyTorch (``expected``) and onnxruntime, input by input: largest difference and
    argmax agreement over all pixels."""
    worst, agree, total = 0.0, 0, 0
    for want, have in zip(expected, got, strict=True):
        worst = max(worst, float(np.abs(want - have).max()))
        agree += int((want.argmax(1) == have.argmax(1)).sum())
        total += want.shape[0] * want.shape[2] * want.shape[3]
    return Parity(len(expected), worst, agree / max(total, 1))


def refuse_non_finite(names: tuple[str, ...], runs: list[Run]) -> None:
    """A model whose outputs on the test images (``runs``, one per image) hold NaN or infinite values is not
    exported (nor registered)."""
    for index, run in enumerate(runs, start=1):
        for name, output in zip(names, run, strict=True):
            if np.issubdtype(output.dtype, np.floating) and not np.isfinite(output).all():
                raise SegpipeError(f"the model's '{name}' output is not finite (NaN or infinite) on test image "
                                   f"{index}: it is not exported; train again (lower train.optimizer.lr, set "
                                   f"train.grad_clip)")
