"""``segpipe predict``: label maps and colour overlays for images, from the ONNX export or a checkpoint."""

from __future__ import annotations

import glob
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segpipe.data.canonical import Categories
from segpipe.data.imageio import DecodeError, load_image, save_label
from segpipe.data.mask_folder import IMAGE_SUFFIXES
from segpipe.errors import SegpipeError
from segpipe.evaluation import TrainedModel
from segpipe.fsutil import atomic_path
from segpipe.inference import infer
from segpipe.progress import track
from segpipe.transforms import build, input_spec
from segpipe.viz import overlay


@dataclass
class Predictor:
    """Normalises an RGB uint8 image and returns its class map, whatever the model format."""

    run: Callable[[torch.Tensor], torch.Tensor]
    categories: Categories
    to_input: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def from_onnx(cls, path: Path) -> Predictor:
        import onnxruntime as ort

        contract_path = path.with_suffix(".json")
        if not contract_path.is_file():
            raise SegpipeError(f"{contract_path}: the model contract is missing; export with `dvc repro export`")
        spec = json.loads(contract_path.read_text())
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = spec["input"]["name"]
        categories = Categories.load_json({"categories": [{**c, "isthing": False} for c in spec["classes"]],
                                           "ignore_index": spec["ignore_index"]})
        to_input = build(input_spec(spec["input"]["mean"], spec["input"]["std"]), categories.ignore_index)
        return cls(lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0]), categories, to_input)

    @classmethod
    def from_checkpoint(cls, path: Path) -> Predictor:
        trained = TrainedModel.load(path, torch.device("cpu"))
        return cls(trained.model, trained.categories, trained.input_transform())

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        path = Path(path)
        if not path.is_file():
            raise SegpipeError(f"{path}: model not found; pass export/model.onnx or models/model.pt")
        return cls.from_onnx(path) if path.suffix == ".onnx" else cls.from_checkpoint(path)

    @torch.no_grad()
    def labels(self, pixels: np.ndarray) -> torch.Tensor:
        images = self.to_input(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0))
        return infer(self.run, images, "whole", self.categories.num_classes).argmax(1)[0]


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images) and glob patterns, in order, without repeats."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    return list(dict.fromkeys(found))


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def predict(predictor: Predictor, inputs: list[str], out_dir: Path) -> PredictReport:
    """Write ``<stem>.png`` (class ids) and ``<stem>_overlay.png`` per readable image; report the others."""
    files = expand_inputs(inputs)
    if not files:
        raise SegpipeError(f"no images found in {' '.join(inputs)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PredictReport()
    for path in track(files, len(files), "predict"):
        try:
            pixels = load_image(path).pixels
        except DecodeError as exc:
            report.skipped.append((path, str(exc)))
            continue
        labels = predictor.labels(pixels)
        target = out_dir / f"{path.stem}.png"
        with atomic_path(target) as tmp:
            save_label(labels.numpy(), tmp)
        picture = overlay(torch.from_numpy(pixels).permute(2, 0, 1), labels, predictor.categories)
        with atomic_path(out_dir / f"{path.stem}_overlay.png") as tmp:
            Image.fromarray(picture.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        report.written.append(target)
    return report
