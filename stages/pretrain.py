"""The pretrain stage (optional): pretrain the model's encoder as a denoising / masked autoencoder on every train image
(train.label_fraction leaves labels out of training, never images out of pretraining)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from segpipe import checkpoint, tracking
from segpipe.data.cache import label_dtype
from segpipe.data.extra_images import cache_extra_images
from segpipe.distributed import barrier, init_runtime, shutdown
from segpipe.fsutil import atomic_dir, write_atomic, write_json
from segpipe.params import OptimizerParams, Params, TrainParams
from segpipe.paths import AUGMENT_POLICY, CACHE, MODELS, PRETRAIN_SUMMARY, PRETRAINED, REPORTS, SPLIT
from segpipe.pretraining import VALIDATION_SEED, PretrainLearner, corrupt, encoder_weights
from segpipe.stage import stage_main, warn
from segpipe.training import STEPS_TAG, FitState, Trainer, fit
from segpipe.viz import reconstruction_grid

CHECKPOINT = MODELS / "checkpoints" / "pretrain_last.pt"
REPORT_DIR = REPORTS / "pretrain"
PREVIEW_IMAGES = 4
EXTRA_DIR = "pretrain-extra-cache"  # beside data/cache while pretraining runs (pretrain.extra_images)


def pretrain_params(params: Params) -> Params:
    """``params`` with a training section of the pretrain section's own (epochs, batch, learning rate; the default
    optimizer and schedule), from scratch, on every train image. Only the step path (``train.amp``,
    ``train.channels_last``) and the loader processes come from ``train``: a sweep's trial, its schedule or its
    optimizer are the fine-tuning's, which DVC reruns without rerunning the pretraining."""
    settings = params.pretrain
    train = TrainParams(epochs=settings.epochs, batch_size=settings.batch_size,
                        max_steps_per_epoch=settings.max_steps_per_epoch, loader_workers=params.train.loader_workers,
                        amp=params.train.amp, channels_last=params.train.channels_last,
                        optimizer=OptimizerParams(lr=settings.lr))
    model = params.model.model_copy(update={"weights": None})  # the encoder learns from scratch
    return params.model_copy(update={"train": train, "model": model})


def _extra_cache(params: Params, folder: Path) -> None:
    """Cache the images of ``pretrain.extra_images`` at the train cache's size; the unreadable ones are rows of
    reports/pretrain/extra_rejects.csv."""
    policy = json.loads(AUGMENT_POLICY.read_text())
    rejects = cache_extra_images(params.pretrain.extra_images, folder / "extra", tuple(policy["size"]),
                                 label_dtype(policy["ignore_index"]), params.base.workers)
    write_atomic(REPORT_DIR / "extra_rejects.csv", lambda p: rejects.to_csv(p, index=False))
    if len(rejects):
        warn("pretrain", f"{len(rejects)} of the extra images cannot be read and are left out; see "
                         f"{REPORT_DIR / 'extra_rejects.csv'}")


def _fingerprint(params: Params) -> str:
    parts = (params.base.seed, params.model.model_dump(exclude={"weights"}), params.pretrain.model_dump(),
             params.augment.model_dump(), params.train.amp, params.train.channels_last)
    return checkpoint.fingerprint(*parts, files=(AUGMENT_POLICY, CACHE / "train/samples.parquet"))


@torch.no_grad()
def _preview(trainer: Trainer, learner: PretrainLearner) -> None:
    model = trainer.model.eval()
    samples = [trainer.val_set[i]["image"] for i in range(min(PREVIEW_IMAGES, len(trainer.val_set)))]
    images = trainer.eval_settings.device_transform(torch.stack(samples).to(trainer.runtime.device))
    corrupted = corrupt(images, learner.settings, learner.std, torch.Generator().manual_seed(VALIDATION_SEED))
    rows = list(zip(images, corrupted, model(corrupted), strict=True))
    normalize = trainer.policy["normalize"]
    reconstruction_grid(rows, normalize["mean"], normalize["std"], REPORT_DIR / "preview.png")


def run(params: Params) -> FitState | None:
    """Write models/pretrained.pt (the encoder's weights, and the whole autoencoder for ``segpipe denoise``; no
    encoder when pretraining is off), reports/pretrain.json and reports/pretrain/ (history.csv and preview.png;
    off.txt when pretraining is off)."""
    if not params.pretrain.enabled:
        with atomic_dir(REPORT_DIR) as folder:  # DVC warns about an empty output folder
            (folder / "off.txt").write_text("pretraining is off: set pretrain.enabled: true to pretrain the encoder\n")
        write_json(PRETRAIN_SUMMARY, {"enabled": False, "model": params.model.name})
        checkpoint.save({"encoder": {}, "model_name": params.model.name}, PRETRAINED)
        print("pretrain: off (pretrain.enabled: false); models/pretrained.pt holds no encoder")
        return None
    runtime = init_runtime(params.base.device)
    extra_dir = (CACHE.parent / EXTRA_DIR).resolve()
    try:
        started = time.monotonic()
        learner = PretrainLearner.from_params(params)
        splits: list[str | Path] = ["train"]
        if runtime.is_main:
            shutil.rmtree(REPORT_DIR, ignore_errors=True)  # no report of an earlier run stays (history is rewritten)
            REPORT_DIR.mkdir(parents=True)
        if runtime.is_machine_main:  # every process of a machine reads what its first one writes here
            shutil.rmtree(extra_dir, ignore_errors=True)
            if params.pretrain.extra_images:
                _extra_cache(params, extra_dir)
        barrier(runtime)
        if params.pretrain.extra_images:
            splits.append(extra_dir / "extra")
        trainer = Trainer(pretrain_params(params), CACHE, SPLIT, runtime, learner, tuple(splits), stage="pretrain")

        def on_start(state: FitState) -> None:
            if runtime.is_main:
                state.run_id = tracking.continue_run(params, state.run_id, str(runtime.device), "pretrain",
                                                     {STEPS_TAG: trainer.step_path.describe()})

        def on_epoch(state: FitState, row: dict) -> None:
            write_atomic(REPORT_DIR / "history.csv", lambda p: pd.DataFrame(state.history).to_csv(p, index=False))
            tracking.log_metrics(params, state.run_id, {f"pretrain_{k}": v for k, v in row.items() if k != "epoch"},
                                 step=row["epoch"])

        state, best = fit(trainer, CHECKPOINT, _fingerprint(params), on_start, on_epoch)
        if runtime.is_main:
            trainer.model.load_state_dict(best)
            _preview(trainer, learner)
            checkpoint.save({"encoder": encoder_weights(best), "autoencoder": best, "model_name": params.model.name,
                             "config": trainer.config, "epoch": state.best_epoch, "val_psnr": state.best_score,
                             "normalize": trainer.policy["normalize"]}, PRETRAINED)
            write_json(PRETRAIN_SUMMARY, {
                "enabled": True, "model": params.model.name, "images": len(trainer.train_set),
                "epochs": state.epoch, "best_epoch": state.best_epoch, "best_val_psnr": state.best_score,
                "seconds": round(time.monotonic() - started, 1), "steps": trainer.step_path.describe(),
                "mlflow_run_id": state.run_id or ""})
            files = [REPORT_DIR / "history.csv", REPORT_DIR / "preview.png", PRETRAIN_SUMMARY]
            tracking.log_artifacts(params, state.run_id, files, "pretrain")
            tracking.finish(params, state.run_id)
            CHECKPOINT.unlink(missing_ok=True)
            print(f"pretrain: best val PSNR {state.best_score:.2f} dB at epoch {state.best_epoch} -> {PRETRAINED} "
                  f"(preview: {REPORT_DIR / 'preview.png'})")
        return state
    finally:
        if runtime.is_main:
            shutil.rmtree(extra_dir, ignore_errors=True)
        shutdown(runtime)


def main() -> None:
    stage_main("pretrain", run)


if __name__ == "__main__":
    main()
