"""The inference cost report (:mod:`segpipe.inference_cost`, as the export stage writes it) of every semantic model
at CamVid's size (360x480, 11 classes), from scratch (weights do not change the cost), measured in one session.

    python -m bench.inference_cost      # about 5 minutes on 2 cores; writes bench/results/inference_cost.json
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from segpipe.fsutil import write_json
from segpipe.inference_cost import cost_report
from segpipe.onnx_export import export_onnx
from segpipe.tasks import get_task

RESULTS = Path(__file__).parent / "results" / "inference_cost.json"
MODELS = {  # table row -> model config as model.pt stores it
    "unet": {"name": "unet", "unet": {"depth": 4, "base_width": 16, "residual": False}},
    "unet (residual)": {"name": "unet", "unet": {"depth": 4, "base_width": 16, "residual": True}},
    "lraspp_mobilenet_v3_large": {"name": "lraspp_mobilenet_v3_large"},
    "deeplabv3_mobilenet_v3_large": {"name": "deeplabv3_mobilenet_v3_large"},
    "deeplabv3_resnet50": {"name": "deeplabv3_resnet50"},
    "fcn_resnet50": {"name": "fcn_resnet50"},
}


def one_model(config: dict, size: list[int], train_size: list[int], runs: int, folder: Path) -> dict:
    task = get_task("semantic")
    config = {"task": "semantic", "num_classes": 11, "unet": MODELS["unet"]["unet"], **config}
    torch.manual_seed(0)
    module = task.onnx_module(task.build_model(config)).eval()
    example = torch.randn(1, 3, *size)
    onnx = folder / f"{config['name']}.onnx"
    export_onnx(module, onnx, example, 18, task.onnx_names(config), task.dynamic_axes(config))
    return cost_report(module, onnx, example, train_size, size, runs, 8, batches=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs timed per runtime at batch 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = {}
        for row, config in MODELS.items():  # each in a fresh process: its peak resident set is its own
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as process:
                rows[row] = process.submit(one_model, config, [360, 480], [256, 256], args.runs,
                                           Path(folder)).result()
            print(row, rows[row], flush=True)
    write_json(RESULTS, {
        "what": "the export stage's cost report per semantic model at 360x480 (CamVid, 11 classes), GFLOPs also "
                "at the 256x256 training crop; latency p50/p95 at batch 1, throughput at batch 8, peak resident set "
                "of the process (one per model; torch and onnxruntime themselves included)",
        "models": rows,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "torch_threads": torch.get_num_threads()}})


if __name__ == "__main__":
    main()
