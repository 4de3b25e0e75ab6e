"""The one evaluation loop and a test evaluator: metrics equal the confusion matrix's, the predictions are written
per sample as they are processed, and the evaluator gives the per-class table and figures."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpipe.data.canonical import Categories, Category
from segpipe.data.imageio import load_label
from segpipe.evaluation import inference_on_dataset
from segpipe.metrics import ConfusionMatrix
from segpipe.params import EvaluateParams
from segpipe.tasks.semantic import SemanticTestEvaluator

CATEGORIES = Categories(tuple(Category(i, name, (i * 80, 0, 0), False) for i, name in enumerate(("a", "b", "c"))),
                        255)


def batches() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 255, (1, 3, 12, 10), generator=g, dtype=torch.uint8),
             "semantic": torch.randint(0, 3, (1, 12, 10), generator=g), "sample_id": [f"s{i}"]} for i in range(3)]


def test_the_semantic_test_evaluator_writes_each_prediction_and_scores_like_the_confusion_matrix(tmp_path):
    data = batches()
    predictions = {f"s{i}": torch.roll(batch["semantic"][0], i, dims=1) for i, batch in enumerate(data)}
    evaluator = SemanticTestEvaluator(CATEGORIES, EvaluateParams(overlays=2), tmp_path)
    written = []

    def forward(batch: dict) -> torch.Tensor:
        written.append(sorted(p.name for p in tmp_path.iterdir()))  # what exists before this batch is processed
        return F.one_hot(predictions[batch["sample_id"][0]], 3).permute(2, 0, 1)[None].float()

    inference_on_dataset(data, forward, evaluator)
    result = evaluator.evaluate(len(data))
    assert written == [[], ["s0.png"], ["s0.png", "s1.png"]]  # image by image, not at the end
    for sample_id, prediction in predictions.items():
        assert np.array_equal(load_label(tmp_path / f"{sample_id}.png"), prediction.numpy())
    reference = ConfusionMatrix(3, 255)
    for i, batch in enumerate(data):
        reference.update(predictions[f"s{i}"][None], batch["semantic"])
    expected = reference.compute()
    assert {k: result.metrics[k] for k in expected} == pytest.approx(expected, abs=0)
    assert result.metrics["images"] == 3 and 0 <= result.metrics["boundary_f1"] <= 1
    assert list(result.per_class["class"]) == ["a", "b", "c"]
    assert result.per_class["support_pixels"].sum() == 3 * 12 * 10
    assert set(result.figures) == {"confusion_matrix.png", "predictions.png"}
    result.figures["confusion_matrix.png"](tmp_path / "matrix.png")
    assert (tmp_path / "matrix.png").stat().st_size > 0
    assert result.summary.startswith(" (whole): miou ")
