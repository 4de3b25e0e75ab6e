import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpipe.errors import SegpipeError
from segpipe.losses import DiceLoss, FocalLoss, build_loss, median_frequency_weights
from segpipe.optim import build_optimizer, build_scheduler
from segpipe.params import parse_params
from tests.conftest import semantic_model

IGNORE = 255


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, 0] = IGNORE
    return logits, target


def loss_params(**kw):
    return parse_params({"train": {"loss": kw}}).train.loss


@pytest.mark.parametrize("name", ["ce", "dice", "ce_dice", "focal"])
def test_losses_are_finite_differentiable_and_ignore_ignored_pixels(name):
    logits, target = batch()
    loss_fn = build_loss(loss_params(name=name), 4, IGNORE)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    assert logits.grad[0, :, 0].abs().sum() == 0  # the ignored row gets no gradient


def test_focal_with_gamma_zero_is_cross_entropy_and_dice_is_zero_when_perfect():
    logits, target = batch(1)
    focal = FocalLoss(0.0, IGNORE, None)(logits, target)
    assert focal.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=IGNORE).item(), rel=1e-5)
    perfect = F.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 50
    assert DiceLoss(IGNORE)(perfect, target).item() < 1e-3


def test_median_frequency_weights_and_explicit_weights():
    # two images of 100 pixels: class 0 in both (120 px), class 1 only in the first (30 px), class 2 never
    weights = median_frequency_weights(np.array([[70, 30, 0], [50, 0, 0]]), np.array([100, 100]))
    freq0, freq1 = 120 / 200, 30 / 100
    median = np.median([freq0, freq1])
    assert weights == pytest.approx([median / freq0, median / freq1, 0.0])
    loss = build_loss(loss_params(class_weights="median_frequency"), 3, IGNORE, weights)
    assert torch.allclose(loss.weight, torch.tensor(weights, dtype=torch.float32))
    with pytest.raises(SegpipeError, match="has 2 values; the dataset has 3 classes"):
        build_loss(loss_params(class_weights=[1.0, 2.0]), 3, IGNORE)


def lrs(schedule: dict, optimizer: str = "sgd", steps: int = 20) -> list[float]:
    params = parse_params({"train": {"optimizer": {"name": optimizer, "lr": 0.1}, "schedule": schedule}}).train
    model = semantic_model("unet", 2, depth=1, base_width=4)
    opt = build_optimizer(model, params.optimizer)
    sched = build_scheduler(opt, params.schedule, total_steps=steps, steps_per_epoch=5)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_warm_up_then_decay():
    poly = lrs({"name": "poly", "warmup_epochs": 1})
    assert poly[0] < poly[4] and poly[4] == pytest.approx(0.1, rel=0.2) and poly[-1] < 0.01
    cosine = lrs({"name": "cosine"}, optimizer="adamw")
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < 0.002
    assert lrs({"name": "constant"}, optimizer="rmsprop") == [pytest.approx(0.1)] * 20
    onecycle = lrs({"name": "onecycle", "warmup_epochs": 1})
    assert max(onecycle) == pytest.approx(0.1, rel=0.05) and onecycle[0] < 0.01 and onecycle[-1] < 0.001
