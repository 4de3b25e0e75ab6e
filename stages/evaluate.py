"""Stage 6: evaluate the trained model on the test split at the original resolution."""

from __future__ import annotations

from segpipe import tracking
from segpipe.config import Params
from segpipe.distributed import resolve_device
from segpipe.evaluation import Evaluation, TrainedModel, evaluate, metrics_json, summary_line
from segpipe.fsutil import write_atomic
from segpipe.paths import MODELS, REPORTS, SPLIT
from segpipe.stage import stage_main
from segpipe.viz import confusion_matrix_plot, prediction_grid

OUTPUTS = {
    "metrics": REPORTS / "metrics.json",
    "per_class": REPORTS / "per_class.csv",
    "confusion": REPORTS / "confusion_matrix.png",
    "overlays": REPORTS / "predictions.png",
}


def run(params: Params) -> Evaluation:
    """Write reports/metrics.json, per_class.csv, confusion_matrix.png and predictions.png; log them to MLflow."""
    device = resolve_device(params.base.device)
    trained = TrainedModel.load(MODELS / "model.pt", device)
    result = evaluate(trained, SPLIT / "test.parquet", params.evaluate, device, params.train.loader_workers)
    write_atomic(OUTPUTS["metrics"], lambda p: p.write_text(metrics_json(result.metrics) + "\n"))
    write_atomic(OUTPUTS["per_class"], lambda p: result.per_class.to_csv(p, index=False, float_format="%.6f"))
    confusion_matrix_plot(result.confusion, trained.categories.names, OUTPUTS["confusion"])
    if result.samples:
        prediction_grid(result.samples, trained.categories, OUTPUTS["overlays"])
    run_id = tracking.load_run_id()
    tracking.log_metrics(params, run_id, {f"test_{k}": v for k, v in result.metrics.items()})
    tracking.log_artifacts(params, run_id, list(OUTPUTS.values()), "evaluation")
    print(f"evaluate: {result.metrics['images']} test images ({params.evaluate.mode}): {summary_line(result.metrics)}")
    return result


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
