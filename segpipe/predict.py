"""``segpipe predict``: the task's results for images (label maps or instance maps, overlays, COCO results),
from the ONNX export or a checkpoint."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segpipe.data.canonical import Categories
from segpipe.data.imageio import DecodeError, load_image, sha256_file
from segpipe.data.mask_folder import IMAGE_SUFFIXES
from segpipe.data.sample_ids import unique_ids
from segpipe.errors import SegpipeError
from segpipe.fsutil import atomic_path, write_json
from segpipe.progress import track
from segpipe.rendering import encode_png
from segpipe.tasks import get_task
from segpipe.tasks.base import Task
from segpipe.trained_model import TrainedModel
from segpipe.transforms import build, input_spec

RESULTS_FILE = "predictions.json"


@dataclass
class Predictor:
    """Normalises an RGB uint8 image and runs the model, whatever its format: ``run`` returns the outputs in the
    ONNX model's order (logits; or boxes, labels, scores, masks), which the task turns into files."""

    run: Callable[[torch.Tensor], list[torch.Tensor]]
    task: Task
    categories: Categories
    to_input: Callable[[torch.Tensor], torch.Tensor]
    output: dict  # the output contract (export/model.json's ``output``)
    contract: dict = field(default_factory=dict)  # the whole export/model.json, for an ONNX model

    @classmethod
    def from_onnx(cls, path: Path, threads: int | None = None) -> Predictor:
        """The ONNX model ``path`` with its contract beside it; ``threads``: onnxruntime's intra-op threads
        (default: its own choice, one per core)."""
        import onnxruntime as ort

        contract_path = path.with_suffix(".json")
        if not contract_path.is_file():
            raise SegpipeError(f"{contract_path}: the model contract is missing; export with `dvc repro export`")
        spec = json.loads(contract_path.read_text())
        task = get_task(spec.get("task", "semantic"))
        if spec.get("sha256") not in (None, sha256_file(path)):
            raise SegpipeError(f"{contract_path} was written for another ONNX file than {path} (sha256 differs); "
                               f"export them together (dvc repro export)")
        try:
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for every unreadable file
            raise SegpipeError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        name = spec["input"]["name"]
        found = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        expected = ([name], list(task.onnx_names(spec["model"])))
        if found != expected:
            raise SegpipeError(f"{path} takes {found[0]} and returns {found[1]}, but {contract_path} describes a "
                               f"{task.name} model with {expected[0]} -> {expected[1]}; export them together")
        classes = [{"isthing": False, **c} for c in spec["classes"]]
        categories = Categories.load_json({"categories": classes, "ignore_index": spec["ignore_index"]})
        to_input = build(input_spec(spec["input"]["mean"], spec["input"]["std"]), categories.ignore_index)

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            return [torch.from_numpy(array) for array in session.run(None, {name: x.numpy()})]

        return cls(run, task, categories, to_input, spec["output"], spec)

    @classmethod
    def from_checkpoint(cls, path: Path) -> Predictor:
        trained = TrainedModel.load(path, torch.device("cpu"))

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            return trained.task.onnx_outputs(trained.model, x)

        output = trained.task.output_contract(trained.saved["config"])
        return cls(run, trained.task, trained.categories, trained.input_transform(), output)

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        path = Path(path)
        if not path.is_file():
            raise SegpipeError(f"{path}: model not found; pass export/model.onnx or models/model.pt")
        return cls.from_onnx(path) if path.suffix == ".onnx" else cls.from_checkpoint(path)

    @torch.no_grad()
    def outputs(self, pixels: np.ndarray) -> list[torch.Tensor]:
        """The model's outputs for one HxWx3 uint8 image."""
        return self.run(self.to_input(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)))


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


def output_stems(files: list[Path]) -> list[str]:
    """A distinct output stem per input file: its own stem, or more of its path where two inputs share a stem
    (``a/x.png`` and ``b/x.png`` -> ``a__x``, ``b__x``), so that no output replaces another."""
    resolved = [f.resolve() for f in files]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    return unique_ids([p.relative_to(root).as_posix() for p in resolved], "an input image")


def check_out_dir(inputs: list[str], files: list[Path], out_dir: Path, targets: list[Path]) -> None:
    """Refuse an output folder that is or lies inside an input folder, and outputs that would replace an input."""
    out = out_dir.resolve()
    for item in inputs:
        folder = Path(item).resolve()
        if Path(item).is_dir() and (out == folder or folder in out.parents):
            raise SegpipeError(f"--out {out_dir} is inside the input folder {item}: the outputs would mix with the "
                               f"inputs; give another folder")
    own = {f.resolve() for f in files}
    for target in targets:
        if target.resolve() in own:
            raise SegpipeError(f"--out {out_dir} would write {target} over an input image; give another folder")


def readable_images(inputs: list[str], out_dir: Path, suffixes: tuple[str, ...], report: PredictReport,
                    desc: str) -> Iterator[tuple[Path, str, np.ndarray]]:
    """(path, output stem, RGB pixels) of every readable image among ``inputs`` (files, folders, globs), with
    progress; each image's outputs are ``<stem><suffix>`` in ``out_dir`` for each of ``suffixes``, distinct and
    never an input. The unreadable ones go to ``report.skipped``. No image at all is an error."""
    files = expand_inputs(inputs)
    if not files:
        raise SegpipeError(f"no images found in {' '.join(inputs)}")
    stems = output_stems(files)
    check_out_dir(inputs, files, out_dir, [out_dir / f"{stem}{suffix}" for stem in stems for suffix in suffixes])
    for path, stem in track(list(zip(files, stems, strict=True)), len(files), desc):
        try:
            yield path, stem, load_image(path).pixels
        except DecodeError as exc:
            report.skipped.append((path, str(exc)))


def predict(predictor: Predictor, inputs: list[str], out_dir: Path) -> PredictReport:
    """Write the task's files per readable image (``<stem>.png`` and ``<stem>_overlay.png``, and for objects
    ``predictions.json`` in COCO results format for the run); report the others. Two inputs never share an
    output, and no output replaces an input."""
    report = PredictReport()
    results: list[dict] | None = None  # COCO results of the run, when the task gives them
    for path, stem, pixels in readable_images(inputs, out_dir, (".png", "_overlay.png"), report, "predict"):
        out_dir.mkdir(parents=True, exist_ok=True)
        rendered = predictor.task.render(predictor.outputs(pixels), pixels, predictor.categories, predictor.output)
        target = out_dir / f"{stem}.png"
        with atomic_path(target) as tmp:
            tmp.write_bytes(encode_png(rendered.label_map))
        with atomic_path(out_dir / f"{stem}_overlay.png") as tmp:
            tmp.write_bytes(encode_png(rendered.overlay))
        report.written.append(target)
        if rendered.results is not None:
            entries = [{"file_name": path.name, "prediction": target.name, **entry} for entry in rendered.results]
            results = (results or []) + entries
    if results is not None:
        write_json(out_dir / RESULTS_FILE, predictor.task.prediction_file(results, predictor.categories))
    return report
