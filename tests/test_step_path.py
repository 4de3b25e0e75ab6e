"""The step path (memory layout and precision) each device and model trains with, auto or as the params say."""

import json

import pytest
import torch

from bench.step_paths import measured_choice
from segpipe import step_path
from segpipe.catalog import MODELS, ModelEntry, register, unregister
from segpipe.engine import StepSettings
from segpipe.params.training import TrainParams
from segpipe.step_path import choose_step_path
from tests.conftest import REPO

CPU = torch.device("cpu")


@pytest.fixture
def models():
    """Two catalog models measured on the CPU: one faster with channels_last and bf16, one with neither."""
    fast = register(ModelEntry("fast_on_cpu", "semantic", "unet", "segpipe.models.unet:build_unet",
                               cpu_channels_last=True, cpu_bf16=True))
    plain = register(ModelEntry("plain_on_cpu", "semantic", "unet", "segpipe.models.unet:build_unet"))
    yield fast.name, plain.name
    unregister(fast.name)
    unregister(plain.name)


@pytest.fixture
def bf16_cpu(monkeypatch):
    def set_native(native: bool) -> None:
        monkeypatch.setattr(step_path, "native_bf16", lambda: native)
    return set_native


def test_auto_on_the_cpu_takes_what_was_measured_for_the_model(models, bf16_cpu):
    fast, plain = models
    bf16_cpu(True)
    chosen = choose_step_path(TrainParams(), CPU, fast)
    assert (chosen.channels_last, chosen.amp) == (True, "bf16")
    assert "faster for fast_on_cpu" in chosen.describe() and "native BF16" in chosen.describe()
    unchanged = choose_step_path(TrainParams(), CPU, plain)
    assert (unchanged.channels_last, unchanged.amp) == (False, "off")
    bf16_cpu(False)  # no BF16 instructions: bf16 would be emulated, so auto stays in fp32
    chosen = choose_step_path(TrainParams(), CPU, fast)
    assert (chosen.channels_last, chosen.amp) == (True, "off")
    assert "without native BF16" in chosen.describe()


def test_the_params_override_auto_and_fp16_is_cuda_only(models, bf16_cpu):
    fast, plain = models
    bf16_cpu(True)
    forced = choose_step_path(TrainParams(channels_last=True, amp="bf16"), CPU, plain)
    assert (forced.channels_last, forced.amp, forced.reason) == (True, "bf16", "as the params say")
    off = choose_step_path(TrainParams(channels_last=False, amp="off"), CPU, fast)
    assert (off.channels_last, off.amp) == (False, "off")
    fp16 = choose_step_path(TrainParams(amp="fp16"), CPU, fast)
    assert fp16.amp == "off" and "CUDA only" in fp16.reason


def test_the_catalog_records_the_fastest_measured_cpu_path_of_each_model():
    """Each model's CPU flags are the fastest path of its row in bench/results/train_throughput.json."""
    measured = json.loads((REPO / "bench/results/train_throughput.json").read_text())["cpu_step_paths"]["models"]
    catalog_rows = [name for name in measured if name in MODELS]
    assert len(catalog_rows) >= 8
    for name in catalog_rows:
        entry = MODELS[name]
        assert measured_choice(measured[name]) == {"channels_last": entry.cpu_channels_last, "bf16": entry.cpu_bf16}


def test_bf16_autocast_and_channels_last_run_a_cpu_step():
    settings = StepSettings(torch.nn.Identity(), "bf16", True, None, None)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    with settings.autocast(CPU):
        out = conv(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    with StepSettings(torch.nn.Identity(), "off", False, None, None).autocast(CPU):
        assert conv(torch.randn(2, 3, 8, 8)).dtype == torch.float32
