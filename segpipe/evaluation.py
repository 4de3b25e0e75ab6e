"""Evaluation in Detectron2's shape: evaluators that accumulate model outputs batch by batch, and the one loop
that feeds them, for the validation pass after every epoch and for the evaluate stage.

A :class:`TestEvaluator` (the evaluate stage's) also owns what the stage writes besides the metrics: it writes the
test predictions as files other tools read while it goes, and gives the per-class table and the figures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from segpipe.data.dataset import DecodingSegmentation, data_loader
from segpipe.params import Params
from segpipe.progress import track

if TYPE_CHECKING:
    from segpipe.trained_model import TrainedModel

Figure = Callable[[Path], None]  # draws one figure at the given path


class Evaluator(ABC):
    """Accumulates model outputs against the batch's ground truth; every process holds its own share."""

    @abstractmethod
    def process(self, batch: dict[str, Any], outputs: Any) -> None:
        """Add one batch (as the loader gave it) and the model's outputs for it."""

    @abstractmethod
    def reduce(self) -> None:
        """Combine the shares of all processes (a no-op without torch.distributed)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over everything processed (after :meth:`reduce`)."""


@dataclass
class Evaluation:
    """What the evaluate stage writes: metrics (reports/metrics.json), a per-class table and figures."""

    metrics: dict[str, float]
    per_class: pd.DataFrame
    figures: dict[str, Figure] = field(default_factory=dict)  # file name -> draws it at the given path
    summary: str = ""


class TestEvaluator(Evaluator):
    """The evaluate stage's evaluator. Its batches carry ``sample_id`` (one per image); it writes each image's
    prediction under its ``predictions`` folder as soon as it is processed, so memory does not grow with the
    number of test images."""

    summary_keys: tuple[str, ...]  # the metrics the stage prints
    summary_label: str = ""  # printed before them, e.g. " (sliding)"

    @abstractmethod
    def per_class(self) -> pd.DataFrame:
        """The per-class table (reports/per_class.csv), after :meth:`compute`."""

    def figures(self) -> dict[str, Figure]:
        """File name -> draws the figure, after :meth:`compute`."""
        return {}

    def close(self) -> None:
        """Finish the prediction files that cover all images (called once, after :meth:`compute`)."""

    def evaluate(self, images: int) -> Evaluation:
        """Metrics of the ``images`` processed, with the per-class table and figures; closes the prediction files."""
        metrics = {**self.compute(), "images": images}
        self.close()
        summary = ", ".join(f"{key} {metrics[key]:.4f}" for key in self.summary_keys)
        return Evaluation(metrics, self.per_class(), self.figures(), f"{self.summary_label}: {summary}")


def inference_on_dataset(batches: Iterable[dict[str, Any]], forward: Callable[[dict[str, Any]], Any],
                         evaluator: Evaluator) -> None:
    """Feed the evaluator ``forward(batch)`` for every batch, then combine the processes' shares (the caller
    takes the result: ``compute`` for validation, ``evaluate`` for the test set)."""
    with torch.no_grad():
        for batch in batches:
            evaluator.process(batch, forward(batch))
    evaluator.reduce()


def _with_sample_ids(batches: Iterable[dict[str, Any]], sample_ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The loader's batches (in manifest order) with the ``sample_id`` of each image."""
    ids = iter(sample_ids)
    for batch in batches:
        yield {**batch, "sample_id": [next(ids) for _ in range(len(batch["image"]))]}


def evaluate_test(trained: TrainedModel, manifest: pd.DataFrame, params: Params, device: torch.device,
                  workers: int, predictions: Path) -> Evaluation:
    """Test metrics over ``manifest`` at the images' original size, the per-class table and figures; the task's
    test evaluator writes the predictions into the folder ``predictions``."""
    task = trained.task
    evaluator = task.test_evaluator(trained, params, predictions)
    to_input = trained.input_transform()
    dataset = DecodingSegmentation(manifest, instances=task.with_instances)
    loader = data_loader(dataset, workers, batch_size=1, collate_fn=task.collate)
    batches = _with_sample_ids(track(loader, len(manifest), "evaluate"), manifest.sample_id)
    inference_on_dataset(batches, lambda batch: task.forward_test(trained, to_input(batch["image"].to(device)), params),
                         evaluator)
    return evaluator.evaluate(len(manifest))
