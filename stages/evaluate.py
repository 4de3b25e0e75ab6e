"""The evaluate stage: evaluate the trained model on the test split at the original resolution."""

from __future__ import annotations

from segpipe import tracking
from segpipe.data.canonical import read_manifest
from segpipe.distributed import resolve_device
from segpipe.errors import SegpipeError
from segpipe.evaluation import Evaluation, evaluate_test
from segpipe.fsutil import atomic_dir, write_atomic
from segpipe.params import Params
from segpipe.paths import METRICS, MODEL, REPORTS, SPLIT
from segpipe.stage import stage_main
from segpipe.trained_model import TrainedModel, metrics_json

PER_CLASS, FIGURES = REPORTS / "per_class.csv", REPORTS / "evaluation"
PREDICTIONS = REPORTS / "test_predictions"


def run(params: Params) -> Evaluation:
    """Write reports/metrics.json, per_class.csv, the task's figures in reports/evaluation/ (logged to MLflow)
    and the test predictions in reports/test_predictions/."""
    device = resolve_device(params.base.device)
    trained = TrainedModel.load(MODEL, device)
    manifest = read_manifest(SPLIT / "test.parquet")
    if manifest.empty:
        raise SegpipeError(f"{SPLIT / 'test.parquet'}: the split is empty; give split.test a share above 0")
    with atomic_dir(PREDICTIONS) as folder:  # written image by image, in place only when evaluation succeeds
        result = evaluate_test(trained, manifest, params, device, params.train.loader_workers, folder)
    write_atomic(METRICS, lambda p: p.write_text(metrics_json(result.metrics) + "\n"))
    write_atomic(PER_CLASS, lambda p: result.per_class.to_csv(p, index=False, float_format="%.6f"))
    with atomic_dir(FIGURES) as folder:
        for name, draw in result.figures.items():
            draw(folder / name)
    run_id = tracking.load_run_id()
    tracking.log_metrics(params, run_id, {f"test_{k}": v for k, v in result.metrics.items()})
    figures = [FIGURES / name for name in result.figures]
    tracking.log_artifacts(params, run_id, [METRICS, PER_CLASS, *figures], "evaluation")
    print(f"evaluate: {result.metrics['images']} test images{result.summary}")
    return result


def main() -> None:
    stage_main("evaluate", run)


if __name__ == "__main__":
    main()
