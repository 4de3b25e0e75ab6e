"""The params of training, pretraining, evaluation and export."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from segpipe.params.section import Section, refuse


class OptimizerParams(Section):
    name: Literal["sgd", "adamw", "rmsprop"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)


class ScheduleParams(Section):
    name: Literal["constant", "poly", "cosine", "onecycle"] = "poly"
    warmup_epochs: float = Field(0.0, ge=0)
    power: float = Field(0.9, gt=0)


class LossParams(Section):
    name: Literal["ce", "dice", "ce_dice", "focal"] = "ce"
    class_weights: Literal["none", "median_frequency"] | list[float] = "none"
    focal_gamma: float = Field(2.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)


class EarlyStoppingParams(Section):
    patience: int | None = Field(None, ge=1, description="epochs without a gain of the val objective before stopping")
    min_delta: float = Field(0.0, ge=0)


class TrialParams(Section):
    """The Optuna trial a sweep runs this training as (set by the sweep with ``-S``, never by hand): the train stage
    reports each epoch's validation objective to it and stops when the study's pruner says so. Being params, it
    keys DVC's run cache, so a pruned training is never restored for a run that asked for a full one."""

    study: str | None = None
    number: int | None = Field(None, ge=0)


class TrainParams(Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    loader_workers: int = Field(2, ge=0)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap steps per epoch (smoke runs)")
    label_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="share of the train split whose labels train the model (seeded, stratified "
                                         "as split.stratify); pretraining still sees every train image")
    samples_per_epoch: int | None = Field(
        None, ge=1, description="samples an epoch draws (the labelled images in turn); null = each image once")
    optimizer: OptimizerParams = OptimizerParams()
    schedule: ScheduleParams = ScheduleParams()
    loss: LossParams = LossParams()
    grad_clip: float | None = Field(None, gt=0)
    freeze_encoder_epochs: int = Field(0, ge=0, description="keep the encoder's weights fixed for this many epochs")
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="mixed precision; auto: bf16 on CUDA, and on a CPU with native BF16 for the models "
                            "where it is measured faster (fp16: CUDA only)")
    channels_last: Literal["auto"] | bool = Field(
        "auto", description="memory layout; auto: on CUDA, and on the CPU for the models where it is measured faster")
    trial: TrialParams = TrialParams()

    @field_validator("amp", mode="before")
    @classmethod
    def _unquoted_off(cls, value: Any) -> Any:  # YAML 1.1 reads a bare `off` as false; DVC's -S writes it bare
        return "off" if value is False else value

    @field_validator("channels_last", mode="before")
    @classmethod
    def _layout(cls, value: Any) -> Any:  # strict: 1 or "yes" is not a layout
        return refuse("" if value == "auto" or isinstance(value, bool) else "must be auto, true or false", value)


class PretrainParams(Section):
    """Autoencoder pretraining of the model's encoder on the train images (their labels unused)."""

    enabled: bool = Field(False, description="off: the stage only records that there is no pretrained encoder")
    corruption: Literal["noise", "mask", "both"] = Field("both", description="what the autoencoder learns to undo")
    noise_std: float = Field(0.2, ge=0, description="Gaussian noise, in 0..1 pixel units")
    mask_ratio: float = Field(0.5, ge=0, lt=1, description="share of patches hidden (masked-image modelling)")
    patch_size: int = Field(16, ge=1, description="side of a hidden patch (px)")
    decoder_width: int = Field(16, ge=4, description="fewest channels of a decoder block (it starts at 8x this)")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap steps per epoch (smoke runs)")
    extra_images: str | None = Field(None, description="a folder of unlabelled images to pretrain on as well")


class EvaluateParams(Section):
    mode: Literal["whole", "sliding"] = "whole"
    window: tuple[int, int] = (256, 256)
    stride: tuple[int, int] = (192, 192)
    boundary_tolerance: int = Field(2, ge=0, description="pixels")
    overlays: int = Field(6, ge=0, le=32)


class ExportParams(Section):
    opset: int = Field(18, ge=13)
    parity_images: int = Field(8, ge=1)
    min_agreement: float = Field(0.999, ge=0, le=1)
    latency_runs: int = Field(20, ge=1, description="runs timed per runtime at batch 1 (p50 and p95 over them)")
    throughput_batch: int = Field(8, ge=1, description="the batch at which the cost report measures throughput")
    cost_size: tuple[int, int] | None = Field(None, description="[height, width] at which the cost report counts "
                                                                "FLOPs and times the runtimes; null: the test image's")
