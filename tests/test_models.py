"""One small base test that every model reuses: forward/backward at odd sizes, save/load, ONNX parity."""

import urllib.error

import numpy as np
import onnxruntime as ort
import pytest
import torch

from segpipe.catalog import task_models
from segpipe.errors import SegpipeError
from segpipe.models import load_weights
from segpipe.onnx_export import INPUT, SPATIAL_AXES, export_onnx
from tests.conftest import semantic_model

HEAVY = {"fcn_resnet50", "deeplabv3_resnet50"}
CASES = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in task_models("semantic")]


def build(name: str) -> torch.nn.Module:
    options = {"depth": 3, "base_width": 8} if name == "unet" else {}
    torch.manual_seed(0)
    return semantic_model(name, num_classes=5, **options)


@pytest.mark.parametrize("name", CASES)
def test_forward_backward_save_load_and_onnx_parity(name, tmp_path):
    model = build(name)
    images = torch.randn(2, 3, 45, 67)  # odd sizes, not multiples of the stride
    logits = model(images)
    assert logits.shape == (2, 5, 45, 67)
    logits.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    model.eval()
    torch.save({"model": model.state_dict()}, tmp_path / "model.pt")
    again = build(name)
    load_weights(again, tmp_path / "model.pt")
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(images), again(images))

    axes = {INPUT: SPATIAL_AXES, "logits": SPATIAL_AXES}
    export_onnx(model, tmp_path / "model.onnx", images[:1], 18, ("logits",), axes)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    other = torch.randn(3, 3, 37, 53)  # dynamic batch and spatial size
    with torch.no_grad():
        expected = model(other).numpy()
    got = session.run(None, {INPUT: other.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.999


def test_residual_unet_and_depths():
    for depth in (1, 4):
        model = semantic_model("unet", 3, depth=depth, base_width=4, residual=True)
        assert model(torch.randn(1, 3, 31, 17)).shape == (1, 3, 31, 17)


def test_weights_of_another_class_count_or_width_are_an_error_naming_the_layers(tmp_path):
    """A checkpoint that does not fit is never loaded in part (training would silently start from scratch)."""
    source = semantic_model("lraspp_mobilenet_v3_large", 7)
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    target = semantic_model("lraspp_mobilenet_v3_large", 4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(SegpipeError, match=r"does not fit this model: model\.classifier\.low_classifier\.weight is "
                                           r"\[7, 40, 1, 1\] there but \[4, 40, 1, 1\] here"):
        load_weights(target, tmp_path / "plain.pt")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing was loaded
    torch.save({"model": semantic_model("unet", 4, depth=2, base_width=8).state_dict()}, tmp_path / "narrow.pt")
    with pytest.raises(SegpipeError, match=r"stem.*is \[8, 3, 3, 3\] there but \[16, 3, 3, 3\] here"):
        load_weights(semantic_model("unet", 4, depth=2, base_width=16), tmp_path / "narrow.pt")


def test_weight_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(SegpipeError, match="is not a file"):
        semantic_model("unet", 3, weights=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(SegpipeError, match="cannot be read as a weights-only checkpoint"):
        semantic_model("unet", 3, weights=str(tmp_path / "junk.pt"))
    torch.save(semantic_model("unet", 3, depth=2).state_dict(), tmp_path / "unet2.pt")
    with pytest.raises(SegpipeError, match="does not fit this model"):
        semantic_model("unet", 3, weights=str(tmp_path / "unet2.pt"), depth=3)
    with pytest.raises(SegpipeError, match="model.weights: no published 'backbone' weights exist for unet"):
        semantic_model("unet", 3, weights="backbone")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SegpipeError, match="could not download .* set model.weights: null"):
        semantic_model("lraspp_mobilenet_v3_large", 3, weights="backbone")
