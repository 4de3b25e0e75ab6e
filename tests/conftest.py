"""Shared fixtures: tiny datasets built on the fly, run inside a temporary project folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segpipe.params import Params, parse_params
from segpipe.stage import telemetry_off

telemetry_off()

REPO = Path(__file__).resolve().parents[1]
THREE_CLASSES = [
    {"name": "background", "color": [0, 0, 0]},
    {"name": "red", "color": [255, 0, 0]},
    {"name": "green", "color": [0, 255, 0], "isthing": True},
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside an empty project folder (stages write data/ and reports/ relative to it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_params(**sections) -> Params:
    """Params for tiny runs: a few small synthetic samples, one worker; ``sections`` override whole sections."""
    data = {
        "base": {"seed": 0, "workers": 1},
        "ingest": {"synthetic": {"num_samples": 24, "size": [64, 64], "max_things": 3}},
        "augment": {"crop_size": [48, 48], "preview_samples": 4},
    }
    data.update(sections)
    return parse_params(data)


def write_params(path: Path, params: Params) -> None:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))


def scene(width: int = 40, height: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random RGB image and a 3-class mask whose right third is class 1 and a box of class 2."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, 2 * width // 3:] = 1
    mask[height // 4: height // 2, width // 4: width // 2] = 2
    return image, mask


def save_pair(root: Path, stem: str, image: np.ndarray, mask: np.ndarray, images: str = "images",
              masks: str = "masks") -> tuple[Path, Path]:
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    image_path, mask_path = root / images / f"{stem}.png", root / masks / f"{stem}.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask, mode="L").save(mask_path)
    return image_path, mask_path


def mask_folder_params(source: Path, **mask_folder) -> dict:
    """The ingest section for a mask folder of THREE_CLASSES."""
    return {"format": "mask_folder", "source": str(source), "mask_folder": {"classes": THREE_CLASSES, **mask_folder}}


def tiny_train_params(**sections) -> Params:
    """tiny_params plus a two-epoch run of a small U-Net (fast and deterministic on CPU)."""
    data = {
        "base": {"seed": 0, "workers": 1, "device": "cpu"},
        "ingest": {"synthetic": {"num_samples": 24, "size": [64, 64], "max_things": 3}},
        "augment": {"crop_size": [48, 48], "preview_samples": 2},
        "model": {"name": "unet", "unet": {"depth": 2, "base_width": 8}},
        "train": {"epochs": 2, "batch_size": 4, "loader_workers": 0},
        "evaluate": {"overlays": 2},
        "export": {"parity_images": 2, "latency_runs": 2},
    }
    data.update(sections)
    return parse_params(data)


def tiny_instance_params(**sections) -> Params:
    """A two-epoch Mask R-CNN (ResNet-18 FPN, 32 channels) on 32 synthetic 64x64 scenes."""
    data = {
        "task": "instance",
        "ingest": {"synthetic": {"num_samples": 32, "size": [64, 64], "max_things": 3}},
        "augment": {"crop_size": [64, 64], "scale": [0.8, 1.0], "rotation": 0, "preview_samples": 2},
        "model": {"name": "maskrcnn_resnet18_fpn",
                  "mask_rcnn": {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128],
                                "fpn_channels": 32}},
        "train": {"epochs": 2, "batch_size": 4, "loader_workers": 0, "optimizer": {"name": "adamw", "lr": 0.001}},
        "export": {"parity_images": 3, "latency_runs": 2},
        "tracking": {"registered_model": "segpipe-instance"},
    }
    return tiny_train_params(**{**data, **sections})


def tiny_panoptic_params(name: str = "panoptic_deeplab_unet", **sections) -> Params:
    """A two-epoch panoptic model (Panoptic-DeepLab on a small U-Net, or a 32-channel Panoptic FPN) on 32
    synthetic 64x64 scenes."""
    model = {"name": name, "unet": {"depth": 3, "base_width": 8}, "panoptic": {"head_channels": 16},
             "mask_rcnn": {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 32}}
    data = {"task": "panoptic", "model": model, "tracking": {"registered_model": "segpipe-panoptic"}}
    return tiny_instance_params(**{**data, **sections})


def predict_two_images(project: Path, model: str, out: Path) -> tuple[list[Path], subprocess.CompletedProcess]:
    """``segpipe predict`` on two of ``project``'s images with the model file ``model`` (relative to it)."""
    images = sorted((project / "data/raw/images").glob("*.png"))[:2]
    done = subprocess.run([sys.executable, "-m", "segpipe.cli", "predict", *map(str, images), "--model",
                           str(project / model), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return images, done


def train_killed_after(project: Path, epoch: int, env: dict[str, str], stage: str = "train") -> None:
    """Start the train (or pretrain) stage in ``project`` and ``kill -9`` it once its checkpoint holds ``epoch``
    epochs."""
    import signal
    import time

    from segpipe import checkpoint

    last = project / "models/checkpoints" / ("last.pt" if stage == "train" else f"{stage}_last.pt")
    process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and checkpoint.load(last)["fit"]["epoch"] >= epoch:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    if stage == "train":
        assert not (project / "models/model.pt").exists()


def torchrun(project: Path, stage: str, env: dict[str, str] | None = None, processes: int = 2,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` of ``stages.<stage>`` with ``processes`` ranks in ``project``; fails the test with
    the last lines of every rank's own stderr (torchrun's summary names only the first failure, and each rank's
    output ends up interleaved)."""
    logs = project / "torchrun-logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "--log-dir", str(logs), "--tee", "3", "-m", f"stages.{stage}"]
    done = subprocess.run(command, cwd=project, env=env or {**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        ranks = sorted(logs.glob("**/attempt_*/*/stderr.log"), key=lambda p: int(p.parent.name))
        tails = "\n".join(f"--- rank {path.parent.name} stderr:\n" + "\n".join(path.read_text().splitlines()[-25:])
                          for path in ranks)
        pytest.fail(f"torchrun {stage} exited {done.returncode}\n{tails or done.stderr[-3000:]}", pytrace=False)
    return done


def torchrun_nodes(folders: list[Path], stage: str, env: dict[str, str],
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --nnodes=len(folders)`` of ``stages.<stage>``: one agent per simulated machine, each in its own
    folder with one process, meeting through c10d rendezvous on 127.0.0.1 as the README shows; returns their
    output, one node after the other."""
    from tests.servers import free_port

    endpoint = f"127.0.0.1:{free_port()}"
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(folders)}",
                                f"--node-rank={rank}", "--nproc-per-node=1", "--rdzv-backend=c10d",
                                f"--rdzv-endpoint={endpoint}", "--rdzv-id=segpipe-test", "-m", f"stages.{stage}"],
                               cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for rank, folder in enumerate(folders)]
    outputs = [agent.communicate(timeout=timeout) for agent in agents]
    for rank, (agent, (_, stderr)) in enumerate(zip(agents, outputs, strict=True)):
        if agent.returncode != 0:
            pytest.fail(f"node {rank}: torchrun {stage} exited {agent.returncode}\n{stderr[-3000:]}", pytrace=False)
    return subprocess.CompletedProcess(agents[0].args, 0, "".join(out for out, _ in outputs),
                                       "".join(err for _, err in outputs))


def semantic_model(name: str, num_classes: int, weights: str | None = None, **unet):
    """Semantic model ``name`` built through the catalog (``unet``: options of a U-Net)."""
    from segpipe.models import build_model

    config = {"task": "semantic", "name": name, "num_classes": num_classes,
              "unet": {"depth": 4, "base_width": 16, "residual": False, **unet}}
    return build_model(config, weights)


def staged_project(root: Path, params: Params, names: tuple[str, ...]) -> Path:
    """``root`` with ``params`` written to its params.yaml and the stages ``names`` run in it, in-process."""
    from segpipe.fsutil import working_directory

    with working_directory(root):
        write_params(root / "params.yaml", params)
        run_stages(params, names)
    return root


def run_stages(params: Params, names: tuple[str, ...]) -> None:
    """Run pipeline stages in-process, in order, in the current folder."""
    import importlib

    for name in names:
        importlib.import_module(f"stages.{name}").run(params)


DATA_STAGES = ("ingest", "clean", "split", "augment")
ALL_STAGES = (*DATA_STAGES, "pretrain", "train", "evaluate", "export")


PROJECT_FILES = ("dvc.yaml", "stages", "segpipe", "flows", ".dvcignore")
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "segpipe tests", "GIT_AUTHOR_EMAIL": "tests@segpipe.invalid",
                "GIT_COMMITTER_NAME": "segpipe tests", "GIT_COMMITTER_EMAIL": "tests@segpipe.invalid"}


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a command with the test's Python first on PATH; fail the test with its output if it fails."""
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": "", **GIT_IDENTITY, **(env or {})}
    done = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def copy_project(target: Path) -> None:
    """Copy the project's code and pipeline definition (not its data) into ``target``."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)


def new_project(target: Path, params: Params, commit: bool = False) -> Path:
    """A copy of the project with ``params`` in a fresh git repository with DVC initialised."""
    target.mkdir(parents=True, exist_ok=True)
    copy_project(target)
    write_params(target / "params.yaml", params)
    (target / ".gitignore").write_text("/.segpipe/\n/mlflow.db\n/mlartifacts/\n")
    sh(target, "git", "init", "-q")
    sh(target, "dvc", "init", "-q")
    sh(target, "dvc", "config", "core.analytics", "false")
    if commit:
        sh(target, "git", "add", "-A")
        sh(target, "git", "commit", "-qm", "project")
    return target


def segpipe_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``segpipe`` run in this process (exit code, stdout, stderr): an unexpected exception fails the test."""
    from segpipe.cli import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
