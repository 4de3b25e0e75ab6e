"""Training throughput of the train stage vs a plain reference loop, onnxruntime vs eager inference, and the
training step of every model per step path (layout and precision; :mod:`bench.step_paths`), and the other CPU
options: torch.compile and the loader workers (:mod:`bench.cpu_options`).

The reference is a torchvision-references style loop: every sample decoded from its PNG with PIL, augmented,
converted to float and normalised in the DataLoader workers; same model, batch, crop size, optimizer and loss.
Each side runs in its own process so that peak memory is its own. Run it where `dvc repro` has produced
data/cache, data/split and export/model.onnx (the step paths need nothing: they build their own synthetic data):

    python -m bench.train_throughput [--steps 30] [--parts stage step_paths cpu_options] [--out ...]  # ~25 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.cpu_options import measure_cpu_options
from bench.step_paths import measure_step_paths
from segpipe.data.canonical import read_manifest
from segpipe.data.dataset import DecodingSegmentation, data_loader
from segpipe.distributed import init_runtime
from segpipe.engine import StepSettings, train_one_epoch
from segpipe.fsutil import write_json
from segpipe.inference_cost import cost_report
from segpipe.params import load_params
from segpipe.paths import CACHE, MODEL, ONNX_MODEL, SPLIT
from segpipe.training import Trainer
from segpipe.transforms import build

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + workers) / 1024, 1)


def measure(mode: str, steps: int) -> dict:
    """Images per second over ``steps`` training steps (after 2 warm-up steps) in this process."""
    params = load_params()
    runtime = init_runtime(params.base.device)
    trainer = Trainer(params, CACHE, SPLIT, runtime)
    settings = trainer.settings
    dataset = trainer.train_set
    if mode == "reference":
        per_sample = trainer.policy["sample"] + trainer.policy["device_eval"]
        ignore, instances = trainer.categories.ignore_index, trainer.task.with_instances
        transform = build(per_sample, ignore, instances, params.augment.min_instance_pixels)
        dataset = DecodingSegmentation(read_manifest(SPLIT / "train.parquet"), tuple(trainer.policy["size"]),
                                       transform, instances)
        settings = StepSettings(torch.nn.Identity(), settings.amp, settings.channels_last, None, None)
    loader = data_loader(dataset, params.train.loader_workers, batch_size=trainer.batch_size, shuffle=True,
                         drop_last=True, collate_fn=trainer.task.collate)
    warm = StepSettings(settings.device_transform, settings.amp, settings.channels_last, None, 2)
    train_one_epoch(trainer.net, loader, trainer.criterion, trainer.optimizer, trainer.scheduler, None, warm,
                    runtime, "warm-up")
    done, start = 0, time.perf_counter()
    while done < steps:
        chunk = min(steps - done, len(loader))
        timed = StepSettings(settings.device_transform, settings.amp, settings.channels_last, None, chunk)
        train_one_epoch(trainer.net, loader, trainer.criterion, trainer.optimizer, trainer.scheduler, None, timed,
                        runtime, mode)
        done += chunk
    seconds = time.perf_counter() - start
    images = done * trainer.batch_size
    result = {"mode": mode, "images": images, "seconds": round(seconds, 2),
              "images_per_s": round(images / seconds, 2), "peak_rss_mb": _peak_rss_mb(),
              "device": str(runtime.device), "task": params.task, "model": params.model.name,
              "batch_size": trainer.batch_size}
    if runtime.device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def inference(runs: int) -> dict:
    """Median latency of onnxruntime vs eager PyTorch on a test image at its original size."""
    from segpipe.trained_model import TrainedModel

    trained = TrainedModel.load(MODEL, torch.device("cpu"))
    model = trained.task.onnx_module(trained.model)
    image = DecodingSegmentation(read_manifest(SPLIT / "test.parquet"))[0]["image"].unsqueeze(0)
    inputs = trained.input_transform()(image)
    timing = cost_report(model, ONNX_MODEL, inputs, None, None, runs, 1, batches=False)
    eager, onnx = (timing["runtimes"][name]["p50_ms"] for name in ("eager_cpu", "onnxruntime_cpu"))
    return {"input_shape": [1, 3, *timing["size"]], "torch_eager_ms": round(eager, 2),
            "onnxruntime_ms": round(onnx, 2), "speedup_onnxruntime_over_torch": round(eager / onnx, 2),
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="training steps measured per side")
    parser.add_argument("--mode", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=20, help="inference runs timed per engine")
    parser.add_argument("--parts", nargs="+", choices=["stage", "step_paths", "cpu_options"],
                        default=["stage", "step_paths", "cpu_options"],
                        help="stage: the train stage against the reference loop; step_paths: every model per path; "
                             "cpu_options: torch.compile and the loader workers")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON figures (parts not run keep theirs)")
    args = parser.parse_args(argv)
    if args.mode:  # the child process: measure one side and print it
        print(json.dumps(measure(args.mode, args.steps)))
        return {}
    figures = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "stage" in args.parts:
        figures.update(stage_figures(args.steps, args.runs))
    if "step_paths" in args.parts:
        with tempfile.TemporaryDirectory() as folder:
            figures["cpu_step_paths"] = measure_step_paths(Path(folder))
    if "cpu_options" in args.parts:
        with tempfile.TemporaryDirectory() as folder:
            figures["cpu_options"] = measure_cpu_options(Path(folder))
    figures.update({"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__})
    write_json(args.out, figures)
    print(json.dumps(figures, indent=2))
    return figures


def stage_figures(steps: int, runs: int) -> dict:
    """The train stage against the reference loop, each in its own process, and inference."""
    sides = {}
    for mode in ("ours", "reference"):
        done = subprocess.run([sys.executable, "-m", "bench.train_throughput", "--mode", mode, "--steps",
                               str(steps)], capture_output=True, text=True, check=True)
        sides[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, reference = sides["ours"], sides["reference"]
    return {
        "benchmark": "train_throughput",
        "train_stage": sides["ours"], "reference_loop": sides["reference"],
        "speedup_train_stage_over_reference": round(ours["images_per_s"] / reference["images_per_s"], 2),
        "peak_rss_ratio_train_stage_over_reference": round(ours["peak_rss_mb"] / reference["peak_rss_mb"], 2),
        "inference": inference(runs) if (ONNX_MODEL).is_file() else "skipped: no export/model.onnx",
    }


if __name__ == "__main__":
    main()
