"""Our metrics must equal torchmetrics' definitions, absent classes and ignore pixels included."""

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from segpipe.metrics import BoundaryF1, ConfusionMatrix

IGNORE = 255


def reference(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    kw = {"num_classes": num_classes, "ignore_index": IGNORE}
    return {
        "pixel_accuracy": MulticlassAccuracy(average="micro", **kw)(pred, target).item(),
        "mean_accuracy": MulticlassAccuracy(average="macro", **kw)(pred, target).item(),
        "miou": MulticlassJaccardIndex(average="macro", **kw)(pred, target).item(),
        "fwiou": MulticlassJaccardIndex(average="weighted", **kw)(pred, target).item(),
        "mean_dice": MulticlassF1Score(average="macro", **kw)(pred, target).item(),
    }


def ours(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    matrix = ConfusionMatrix(num_classes, IGNORE)
    for p, t in zip(pred, target, strict=True):  # accumulate image by image
        matrix.update(p, t)
    return matrix.compute()


def random_case(seed: int, num_classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (3, 20, 24), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target,
                       torch.randint(0, num_classes, target.shape, generator=g))
    target[torch.rand(target.shape, generator=g) < 0.1] = IGNORE
    return pred, target


@pytest.mark.parametrize("seed", range(5))
def test_random_cases_match_torchmetrics(seed):
    pred, target = random_case(seed)
    assert ours(pred, target, 5) == pytest.approx(reference(pred, target, 5), abs=1e-6)


def test_absent_classes_match_torchmetrics():
    pred, target = random_case(7, num_classes=4)
    # class 4 never occurs; class 5 is predicted somewhere but absent from the ground truth
    pred[0, 0, :5] = 5
    assert ours(pred, target, 6) == pytest.approx(reference(pred, target, 6), abs=1e-6)
    per = ConfusionMatrix(6, IGNORE)
    per.update(pred, target)
    assert per.per_class()["iou"][5] == 0 and not per.per_class()["present"][4]


def test_all_ignore_image_adds_nothing():
    pred, target = random_case(3)
    matrix = ConfusionMatrix(5, IGNORE)
    matrix.update(pred, target)
    before = matrix.compute()
    matrix.update(torch.zeros(20, 24, dtype=torch.long), torch.full((20, 24), IGNORE))
    assert matrix.compute() == before
    empty = ConfusionMatrix(5, IGNORE)
    empty.update(torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), IGNORE))
    assert empty.compute()["miou"] == 0.0


def test_perfect_prediction_scores_one():
    _, target = random_case(1)
    pred = target.clone()
    pred[pred == IGNORE] = 0
    matrix = ConfusionMatrix(5, IGNORE)
    matrix.update(pred, target)
    assert all(v == pytest.approx(1.0) for v in matrix.compute().values())
    boundary = BoundaryF1(5, IGNORE, tolerance=0)
    boundary.update(pred, target)
    assert boundary.compute() == pytest.approx(1.0)


def test_boundary_f1_tolerance():
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[:, 8:24, 8:24] = 1
    shifted = torch.roll(target, shifts=1, dims=2)  # one pixel off
    strict, tolerant = BoundaryF1(2, IGNORE, 0), BoundaryF1(2, IGNORE, 1)
    strict.update(shifted, target)
    tolerant.update(shifted, target)
    assert tolerant.compute() == pytest.approx(1.0)
    assert strict.compute() < 0.7
