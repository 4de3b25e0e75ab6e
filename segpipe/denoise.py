"""``segpipe denoise``: the pretrained autoencoder's reconstructions of images (noise and blemishes removed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segpipe import checkpoint
from segpipe.errors import SegpipeError
from segpipe.fsutil import atomic_path
from segpipe.predict import PredictReport, readable_images
from segpipe.pretraining import PretrainLearner
from segpipe.transforms import build, input_spec


def load_autoencoder(path: Path) -> tuple[torch.nn.Module, dict]:
    """The autoencoder saved by the pretrain stage (models/pretrained.pt) in eval mode, and its normalisation."""
    if not path.is_file():
        raise SegpipeError(f"{path}: not found; run the pretrain stage with pretrain.enabled: true")
    saved = checkpoint.load(path)
    if not isinstance(saved, dict) or "encoder" not in saved:
        raise SegpipeError(f"{path}: not the pretrain stage's models/pretrained.pt (a trained model goes to "
                           f"segpipe predict)")
    if not saved.get("autoencoder"):
        raise SegpipeError(f"{path} holds no autoencoder (pretrain.enabled was false); enable it and run dvc repro")
    model = PretrainLearner.from_config(saved["config"]).build_model(saved["config"])
    checkpoint.load_into(model, saved["autoencoder"], str(path), "pretrain again (dvc repro pretrain)")
    return model.eval(), saved["normalize"]


@torch.no_grad()
def denoise(model_path: str | Path, inputs: list[str], out_dir: Path) -> PredictReport:
    """Write ``<stem>.png``, the reconstruction of each readable image, to ``out_dir``; report the others."""
    model, normalize = load_autoencoder(Path(model_path))
    to_input = build(input_spec(normalize["mean"], normalize["std"]), 255)
    mean, std = (torch.tensor(normalize[key])[:, None, None] for key in ("mean", "std"))
    report = PredictReport()
    for _, stem, pixels in readable_images(inputs, out_dir, (".png",), report, "denoise"):
        out_dir.mkdir(parents=True, exist_ok=True)
        output = model(to_input(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)))[0]
        picture = ((output * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        target = out_dir / f"{stem}.png"
        with atomic_path(target) as tmp:
            Image.fromarray(np.ascontiguousarray(picture)).save(tmp, format="PNG")
        report.written.append(target)
    return report
