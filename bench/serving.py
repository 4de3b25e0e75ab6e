"""``segpipe serve`` under load next to ``segpipe predict`` on the same images, measured in one session.

    python -m bench.serving      # about 1.5 minutes on 2 cores; writes bench/results/serving.json

The model is the default pipeline's (LRASPP MobileNetV3 on the embedded synthetic scenes at 128x128, trained for
one epoch: its speed does not depend on how well it learned), exported to ONNX. The server gets raw-body POSTs
of the embedded synthetic images (the label PNG back) from 1, 4 and 16 clients at once, with one worker process
and with two; each client sends its next request when the last one is answered. ``segpipe predict`` writes the
same label maps (and overlays) for the same images, timed as a command (its start included) and as the library
call.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from segpipe.fsutil import working_directory, write_json
from segpipe.params import load_params
from segpipe.predict import Predictor, predict
from tests.conftest import ALL_STAGES, REPO, run_stages, write_params
from tests.servers import segpipe_server

RESULTS = Path(__file__).parent / "results" / "serving.json"
CONCURRENCY = (1, 4, 16)
REQUESTS = 96  # per concurrency level


def default_project(folder: Path) -> Path:
    """The default params (one epoch) run through every stage in ``folder``."""
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})})
    folder.mkdir(parents=True)
    with working_directory(folder):
        write_params(folder / "params.yaml", params)
        run_stages(params, ALL_STAGES)
    return folder


def load(url: str, bodies: list[bytes], clients: int) -> dict:
    """Requests per second and latency percentiles of REQUESTS posts from ``clients`` clients at once."""
    def one(index: int) -> float:
        started = time.perf_counter()
        answer = httpx.post(f"{url}/predict", content=bodies[index % len(bodies)], timeout=120)
        answer.raise_for_status()
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))  # warm-up: every client connects once
        started = time.perf_counter()
        latencies = list(pool.map(one, range(REQUESTS)))
        seconds = time.perf_counter() - started
    return {"clients": clients, "requests": REQUESTS, "requests_per_s": round(REQUESTS / seconds, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2)}


def predict_figures(project: Path, images: list[Path], out: Path) -> dict:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segpipe.cli", "predict", *map(str, images), "--model",
                    str(project / "export/model.onnx"), "--out", str(out / "cli")], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    command_s = time.perf_counter() - started
    predictor = Predictor.load(project / "export/model.onnx")
    predict(predictor, [str(images[0])], out / "warm")
    started = time.perf_counter()
    predict(predictor, [str(p) for p in images], out / "library")
    library_s = time.perf_counter() - started
    return {"images": len(images), "command_s": round(command_s, 2),
            "command_images_per_s": round(len(images) / command_s, 1),
            "library_images_per_s": round(len(images) / library_s, 1),
            "library_ms_per_image": round(1000 * library_s / len(images), 2)}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        project = default_project(Path(folder) / "project")
        images = sorted((project / "data/raw/images").glob("*.png"))[:REQUESTS]
        bodies = [p.read_bytes() for p in images]
        serve = {}
        for workers in (1, 2):
            with segpipe_server(project, "--workers", str(workers), log=Path(folder) / f"serve{workers}.log") as url:
                serve[f"{workers}_worker{'s' if workers > 1 else ''}"] = [load(url, bodies, c) for c in CONCURRENCY]
        local = predict_figures(project, images, Path(folder) / "predicted")
        size = list(np.asarray(Image.open(images[0])).shape[:2])
    figures = {
        "what": "segpipe serve (raw-body POST of a test image, label PNG back) at 1, 4 and 16 clients at once, with "
                "1 and 2 worker processes, next to segpipe predict on the same images (as a command with its "
                "start, and as the library call)",
        "model": "lraspp_mobilenet_v3_large (default params, 1 epoch), ONNX on onnxruntime CPU",
        "image_size": size, "serve": serve, "predict": local,
        "best_serve_over_library": round(max(r["requests_per_s"] for rows in serve.values() for r in rows)
                                         / local["library_images_per_s"], 3),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    }
    write_json(RESULTS, figures)
    print(figures)


if __name__ == "__main__":
    main()
