"""Read and validate ``params.yaml`` into typed objects; every mistake is a one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segpipe.errors import SegpipeError

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(0, ge=0, description="processes for decoding; 0 = all cores")


class ClassSpec(Section):
    name: str
    color: tuple[int, int, int]
    isthing: bool = False

    @field_validator("color")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in value):
            raise ValueError("colour components must lie in 0..255")
        return value


class SyntheticParams(Section):
    num_samples: int = Field(160, ge=1)
    size: tuple[int, int] = (128, 128)
    max_things: int = Field(5, ge=0)

    @field_validator("size")
    @classmethod
    def _size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 32:
            raise ValueError("height and width must be at least 32 pixels")
        return value


class SplitFolders(Section):
    images: str
    masks: str


class MaskFolderParams(Section):
    images: str = "images"
    masks: str = "masks"
    splits: dict[Literal["train", "val", "test"], SplitFolders] | None = None
    mask_suffix: str = ""
    mask_encoding: Literal["index", "color"] = "index"
    classes: list[ClassSpec] = Field(default_factory=list)
    label_map: dict[int, int | Literal["ignore"]] = Field(default_factory=dict)
    ignore_index: int = 255


class IngestParams(Section):
    format: Literal["synthetic", "mask_folder"] = "synthetic"
    source: str | None = Field(None, description="directory, .zip/.tar.* archive or http(s) URL")
    sha256: str | None = None
    download: bool = False
    synthetic: SyntheticParams = SyntheticParams()
    mask_folder: MaskFolderParams = MaskFolderParams()

    @model_validator(mode="after")
    def _source_needed(self) -> IngestParams:
        if self.format != "synthetic" and not self.source:
            raise ValueError(f"format '{self.format}' needs ingest.source (a folder, archive or URL)")
        if self.format == "mask_folder" and not self.mask_folder.classes:
            raise ValueError("format 'mask_folder' needs ingest.mask_folder.classes (name and color per class)")
        return self


DropOrFail = Literal["drop", "fail"]


class CleanParams(Section):
    on_corrupt: DropOrFail = "drop"
    on_unpaired: DropOrFail = "drop"
    on_size_mismatch: Literal["drop", "fail", "resize_mask"] = "drop"
    on_label_out_of_range: Literal["drop", "fail", "to_ignore"] = "drop"
    on_duplicate: Literal["drop", "fail", "keep"] = "drop"
    on_all_ignore: Literal["drop", "fail", "keep"] = "drop"


class SplitParams(Section):
    predefined: Literal["auto", "use", "ignore"] = "auto"
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ratios(self) -> SplitParams:
        if self.val + self.test >= 1.0:
            raise ValueError("split.val + split.test must be below 1 so that train is not empty")
        return self


class Normalize(Section):
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ColorJitterParams(Section):
    p: float = Field(0.0, ge=0, le=1)
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    saturation: float = Field(0.2, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5, description="slow on CPU: ~7 ms per 256x256 image")


class AugmentParams(Section):
    cache_size: tuple[int, int] | None = Field(None, description="[height, width] to resize once; null = keep")
    crop_size: tuple[int, int] | None = None
    scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotation: float = Field(0.0, ge=0, le=180, description="max degrees either way")
    color_jitter: ColorJitterParams = ColorJitterParams()
    noise_std: float = Field(0.0, ge=0)
    blur_p: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    normalize: Normalize = Normalize()
    preview_samples: int = Field(8, ge=1, le=64)

    @field_validator("scale", "blur_sigma")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("needs 0 < low <= high")
        return value


ModelName = Literal[
    "unet", "fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


class UNetParams(Section):
    depth: int = Field(4, ge=1, le=6)
    base_width: int = Field(16, ge=4)
    residual: bool = False


class ModelParams(Section):
    name: ModelName = "lraspp_mobilenet_v3_large"
    weights: str | None = Field(None, description="null (from scratch), backbone, full, or a checkpoint path")
    unet: UNetParams = UNetParams()


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
    patience: int | None = Field(None, ge=1, description="epochs without val mIoU gain before stopping")
    min_delta: float = Field(0.0, ge=0)


class TrainParams(Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    loader_workers: int = Field(2, ge=0)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap steps per epoch (smoke runs)")
    optimizer: OptimizerParams = OptimizerParams()
    schedule: ScheduleParams = ScheduleParams()
    loss: LossParams = LossParams()
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    amp: Literal["bf16", "fp16", "off"] = Field("bf16", description="mixed precision on CUDA only")
    channels_last: bool = True


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
    latency_runs: int = Field(10, ge=1)


class TrackingParams(Section):
    enabled: bool = Field(True, description="log runs to MLflow")
    experiment: str = "segpipe"
    registered_model: str | None = "segpipe-semantic"
    default_uri: str = Field("sqlite:///mlflow.db", description="used when MLFLOW_TRACKING_URI is not set")


class RangeSpec(Section):
    """A numeric range for random and Bayesian search."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError("needs low < high (and low > 0 with log: true)")
        return self


class SweepParams(Section):
    method: Literal["grid", "random", "bayes"] = "grid"
    trials: int = Field(4, ge=1, description="trials for random and bayes (grid runs every combination)")
    concurrency: int = Field(1, ge=1, description="trials at once: 1 on a 2-core CPU, more with GPU workers")
    objective: str = Field("test_miou", description="MLflow metric the sweep optimises")
    direction: Literal["maximize", "minimize"] = "maximize"
    space: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict, description="dotted key -> values or range")

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> SweepParams:
        if self.method == "grid" and any(isinstance(v, RangeSpec) for v in self.space.values()):
            raise ValueError("grid search needs a list of values for every key; use random or bayes for ranges")
        return self


class OrchestrationParams(Section):
    retries: int = Field(1, ge=0, description="retries of a stage task after a transient failure")
    retry_delay_seconds: float = Field(10.0, ge=0)
    cron: str = Field("0 3 * * *", description="schedule of the deployments")
    timezone: str = "UTC"
    work_pool: str = "segpipe-cpu"
    sweep: SweepParams = SweepParams()


class Params(Section):
    base: BaseParams = BaseParams()
    ingest: IngestParams = IngestParams()
    clean: CleanParams = CleanParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()
    orchestration: OrchestrationParams = OrchestrationParams()


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}' (check the spelling; see params.yaml in the project for the keys)"
    got = error.get("input")
    detail = error["msg"].removeprefix("Value error, ")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {key or '<top level>'}: {detail}{shown}"


def parse_params(data: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise :class:`SegpipeError` naming the first bad key."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SegpipeError(_describe(errors[0], source) + more) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"{path}: not found; run from the project root or pass the params file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SegpipeError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is not None and not isinstance(data, dict):
        raise SegpipeError(f"{path}: must be a mapping of sections (base, ingest, ...)")
    return parse_params(data, str(path))
