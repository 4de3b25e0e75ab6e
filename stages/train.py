"""The train stage: train the model on the training cache; resumable; DDP when started under torchrun."""

from __future__ import annotations

import pandas as pd

from segpipe import checkpoint, tracking
from segpipe.distributed import init_runtime, shutdown
from segpipe.fsutil import write_atomic, write_json
from segpipe.params import Params
from segpipe.paths import AUGMENT_POLICY, CACHE, MODEL, MODELS, REPORTS, SPLIT, TRAIN_SUMMARY
from segpipe.stage import stage_main
from segpipe.sweep.reporting import TrialReporter
from segpipe.training import STEPS_TAG, FitState, Trainer, fit, initial_weights_files, kept_epoch_summary
from segpipe.viz import training_curves

CHECKPOINT = MODELS / "checkpoints" / "last.pt"
HISTORY = REPORTS / "train_history.csv"
CURVES = REPORTS / "train_curves.png"
PREVIEW = REPORTS / "augment_preview.png"  # written by augment, logged with the run that trains on it


def _fingerprint(params: Params) -> str:
    parts = (params.base.seed, params.model.model_dump(), params.train.model_dump(), params.augment.model_dump(),
             params.split.stratify)
    files = (AUGMENT_POLICY, CACHE / "train/samples.parquet", CACHE / "val/samples.parquet",
             *initial_weights_files(params.model.weights))  # a changed encoder never resumes an old run
    return checkpoint.fingerprint(*parts, files=files)


def run(params: Params) -> FitState:
    """Write models/model.pt (the best epoch's weights + config), the history CSV and curves PNG, the MLflow run."""
    runtime = init_runtime(params.base.device)
    try:
        trainer = Trainer(params, CACHE, SPLIT, runtime)
        if runtime.is_main and params.train.label_fraction < 1:
            print(f"train: on the labels of {len(trainer.labelled)} of {trainer.train_images} "
                  f"train images (train.label_fraction {params.train.label_fraction}, seed {params.base.seed})")

        steps = {STEPS_TAG: trainer.step_path.describe()}  # auto resolves per machine: each run says what it ran

        def on_start(state: FitState) -> None:
            if runtime.is_main:
                state.run_id = tracking.continue_run(params, state.run_id, str(runtime.device), tags=steps)

        def on_epoch(state: FitState, row: dict) -> None:
            write_atomic(HISTORY, lambda p: pd.DataFrame(state.history).to_csv(p, index=False))
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            tracking.log_metrics(params, state.run_id, metrics, step=row["epoch"])

        reporter = TrialReporter(params.train.trial) if runtime.is_main and params.train.trial.study else None
        state, best = fit(trainer, CHECKPOINT, _fingerprint(params), on_start, on_epoch,
                          reporter.should_stop if reporter else None)
        if runtime.is_main:
            checkpoint.save({"model": best, "config": trainer.config, "categories": trainer.categories.to_json(),
                             "normalize": trainer.policy["normalize"], "train_size": trainer.policy["train_size"],
                             "epoch": state.best_epoch, trainer.objective: state.best_score}, MODEL)
            training_curves(state.history, CURVES)
            summary = {**kept_epoch_summary(state, trainer.objective), "steps": steps[STEPS_TAG]}
            write_json(TRAIN_SUMMARY, summary)
            if state.pruned_epoch is not None:
                tracking.log_metrics(params, state.run_id, {"pruned_epoch": state.pruned_epoch})
            if reporter:
                reporter.finish(summary)
            tracking.save_run_id(state.run_id, tracking.tracking_uri(params.tracking))
            tracking.log_artifacts(params, state.run_id, [HISTORY, CURVES, PREVIEW])
            CHECKPOINT.unlink(missing_ok=True)
            server_id = tracking.server_run_id(state.run_id) or "pending in the tracking outbox"
            print(f"train: best {trainer.task.objective_label} {state.best_score:.4f} at epoch {state.best_epoch} -> "
                  f"{MODEL} (MLflow run {server_id})")
        return state
    finally:
        shutdown(runtime)


def main() -> None:
    stage_main("train", run)


if __name__ == "__main__":
    main()
