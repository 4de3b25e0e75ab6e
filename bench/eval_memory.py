"""Peak memory of test-time evaluation against the number of test images: the evaluate stage's loop on 50 and on
500 synthetic scenes of one size, each in a process of its own, with the trained model of a project where
``dvc repro`` has run. Predictions go to disk as they are made, so the two peaks should be nearly equal.

    python -m bench.eval_memory [--images 50 500] [--side 512]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from segpipe.data.canonical import read_manifest, write_manifest
from segpipe.data.ingest import ingest
from segpipe.evaluation import evaluate_test
from segpipe.fsutil import write_json
from segpipe.params import load_params
from segpipe.paths import MODEL
from segpipe.trained_model import TrainedModel

RESULTS = Path(__file__).parent / "results" / "eval_memory.json"


def evaluate_once(manifest: Path, predictions: Path) -> dict:
    """Evaluate the project's model on ``manifest`` in this process (loading in it too); its peak memory."""
    params = load_params()
    trained = TrainedModel.load(MODEL, torch.device("cpu"))
    started = time.perf_counter()
    predictions.mkdir()
    result = evaluate_test(trained, read_manifest(manifest), params, torch.device("cpu"), 0, predictions)
    return {"images": result.metrics["images"], "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "written": len(list(predictions.iterdir()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--side", type=int, default=512, help="height and width of every test image")
    parser.add_argument("--child", nargs=2, metavar=("MANIFEST", "PREDICTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(evaluate_once(Path(args.child[0]), Path(args.child[1]))))
        return
    params = load_params()
    scenes = params.model_copy(update={"ingest": params.ingest.model_copy(update={
        "synthetic": params.ingest.synthetic.model_copy(update={"num_samples": max(args.images),
                                                                "size": (args.side, args.side)})})})
    runs = []
    with tempfile.TemporaryDirectory(prefix="eval-memory-") as tmp:
        manifest = ingest(scenes, Path(tmp) / "raw")
        for count in args.images:
            path = Path(tmp) / f"test_{count}.parquet"
            write_manifest(manifest.head(count), path)
            done = subprocess.run([sys.executable, "-m", "bench.eval_memory", "--child", str(path),
                                   str(Path(tmp) / f"predictions_{count}")], capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{count} images of {args.side}x{args.side}: peak RSS {runs[-1]['peak_rss_mb']} MB in "
                  f"{runs[-1]['seconds']} s")
    result = {"task": params.task, "model": params.model.name, "side": args.side, "runs": runs,
              "peak_ratio_most_to_fewest": round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}}
    write_json(RESULTS, result)
    print(f"peak RSS ratio {result['peak_ratio_most_to_fewest']} ({args.images[-1]} vs {args.images[0]} images) "
          f"-> {RESULTS}")


if __name__ == "__main__":
    main()
