"""Read and validate ``params.yaml`` into typed objects; every mistake is a one-line error."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from segpipe.catalog import model_problem, name_problem, task_problem, weights_problem
from segpipe.errors import SegpipeError

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no .inf / .nan anywhere


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
    ignore_index: int = Field(255, description="index masks: the source value that means 'not labelled'")
    ignore_colors: list[tuple[int, int, int]] = Field(
        default_factory=list, description="colour masks: colours that mean 'not labelled' (e.g. VOC's border)")

    @model_validator(mode="after")
    def _label_map_targets(self) -> MaskFolderParams:
        if not self.classes:
            return self
        for source, target in self.label_map.items():
            if target != "ignore" and not 0 <= target < len(self.classes):
                raise ValueError(
                    f"label_map maps {source} to {target}, but the classes are 0..{len(self.classes) - 1} "
                    f"({', '.join(c.name for c in self.classes)}); use a class id or 'ignore'")
        for color in self.ignore_colors:
            if any(not 0 <= c <= 255 for c in color):
                raise ValueError(f"ignore_colors: {list(color)} is not an RGB colour (components 0..255)")
            if any(tuple(c.color) == tuple(color) for c in self.classes):
                raise ValueError(f"ignore_colors: {list(color)} is also the colour of a class")
        return self


SplitName = Literal["train", "val", "test"]


class CocoSplit(Section):
    annotations: str
    images: str


class CocoParams(Section):
    annotations: str = Field("annotations/instances.json", description="COCO instances JSON, relative to source")
    images: str = Field("images", description="folder the JSON's file_name values are relative to")
    splits: dict[SplitName, CocoSplit] | None = Field(None, description="one JSON + image folder per split")


class CocoPanopticSplit(Section):
    annotations: str
    masks: str
    images: str


class CocoPanopticParams(Section):
    annotations: str = Field("annotations/panoptic.json", description="COCO panoptic JSON, relative to source")
    masks: str = Field("annotations/panoptic", description="folder of the segment-id PNGs the JSON names")
    images: str = Field("images", description="folder of the images (same stem as their PNG)")
    splits: dict[SplitName, CocoPanopticSplit] | None = Field(None, description="one JSON + folders per split")


class CityscapesParams(Section):
    splits: list[SplitName] = Field(["train", "val", "test"], description="leftImg8bit/gtFine folders to read")


class YoloSplit(Section):
    images: str
    labels: str | None = None


class YoloSegParams(Section):
    images: str = Field("images", description="image folder; labels in the same path with images -> labels")
    labels: str | None = Field(None, description="label folder when it is not the images path with 'labels'")
    splits: dict[SplitName, YoloSplit] | None = None
    names: list[str] = Field(default_factory=list, description="class names in YOLO index order")
    data_yaml: str | None = Field(None, description="an Ultralytics data.yaml (relative to source) with names")


class VocParams(Section):
    image_sets: list[SplitName] = Field(["train", "val"], description="ImageSets/Segmentation lists to read")


class LimitsParams(Section):
    """What reading a source may take: an archive's members and size, a download's size."""

    archive_members: int = Field(1_000_000, ge=1, description="archives with more members are refused")
    archive_bytes: int | None = Field(None, ge=1, description="archives that extract to more are refused; null: the "
                                                               "free space of the folder they are extracted to")
    download_bytes: int = Field(100 * 2**30, ge=1, description="a download larger than this is stopped and removed")


class IngestParams(Section):
    format: Literal["synthetic", "mask_folder", "coco", "coco_panoptic", "cityscapes", "yolo_seg", "voc"] = "synthetic"
    source: str | None = Field(None, description="directory, .zip/.tar.* archive or http(s) URL")
    sha256: str | None = None
    download: bool = False
    limits: LimitsParams = LimitsParams()
    synthetic: SyntheticParams = SyntheticParams()
    mask_folder: MaskFolderParams = MaskFolderParams()
    coco: CocoParams = CocoParams()
    coco_panoptic: CocoPanopticParams = CocoPanopticParams()
    cityscapes: CityscapesParams = CityscapesParams()
    yolo_seg: YoloSegParams = YoloSegParams()
    voc: VocParams = VocParams()

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
    on_object_defect: Literal["drop_object", "drop", "fail"] = Field(
        "drop_object", description="an object that cannot become a mask: leave it out, drop its sample, or fail")
    warn_ignore_share: float = Field(0.3, ge=0, le=1, description="warn when more of the mask pixels are ignore")
    max_pixels: int | None = Field(
        None, ge=1, description="images or masks with more pixels are refused from their header, before decoding "
                                "(ingest, clean, predict); null: sized for this machine's memory and cores")


class SplitParams(Section):
    predefined: Literal["auto", "use", "ignore"] = "auto"
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    stratify: Literal["pixel_shares", "classes_present"] = Field(
        "pixel_shares", description="balance class pixel shares, or which classes each image holds (objects)")

    @model_validator(mode="after")
    def _ratios(self) -> SplitParams:
        if self.val + self.test >= 1.0:
            raise ValueError("split.val + split.test must be below 1 so that train is not empty")
        return self


class Normalize(Section):
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("every channel's std must be above 0: images are divided by it")
        return value


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
    min_instance_pixels: int = Field(8, ge=1, description="instances a crop leaves smaller than this are dropped")

    @field_validator("scale", "blur_sigma")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("needs 0 < low <= high")
        return value

    @model_validator(mode="after")
    def _crop_fits_cache(self) -> AugmentParams:
        crop, cache = self.crop_size, self.cache_size
        if crop and cache and (crop[0] > cache[0] or crop[1] > cache[1]):
            raise ValueError(f"crop_size {list(crop)} is larger than cache_size {list(cache)}: every training "
                             f"sample would be upsampled; use a crop of at most {list(cache)}")
        return self


def _refuse(problem: str, value: Any) -> Any:
    """``value``, or a validation error when the catalog names a ``problem`` with it."""
    if problem:
        raise ValueError(problem)
    return value


class UNetParams(Section):
    depth: int = Field(4, ge=1, le=6)
    base_width: int = Field(16, ge=4)
    residual: bool = False


class MaskRCNNParams(Section):
    """Mask R-CNN settings (task: instance)."""

    min_size: int = Field(128, ge=32, description="images are resized so their short side is this")
    max_size: int = Field(256, ge=32, description="... and their long side at most this")
    anchor_sizes: tuple[int, int, int, int, int] = Field(
        (16, 32, 64, 128, 256), description="anchor size per FPN level, strides 4, 8, 16, 32, 64")
    fpn_channels: int = Field(64, ge=8, description="resnet18_fpn only; the ResNet-50 models use torchvision's 256")
    detections_per_image: int = Field(100, ge=1)
    score_threshold: float = Field(0.05, ge=0, lt=1, description="detections below this score are dropped")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="mask probability that counts as the object")

    @model_validator(mode="after")
    def _sizes(self) -> MaskRCNNParams:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is larger than max_size {self.max_size}")
        return self


class PanopticParams(Section):
    """Panoptic heads, loss weights and post-processing (task: panoptic)."""

    head_channels: int = Field(32, ge=4, description="width of the heads (Panoptic-DeepLab) / semantic FPN head")
    semantic_weight: float = Field(1.0, ge=0, description="weight of the semantic cross-entropy")
    hard_pixel_share: float = Field(1.0, gt=0, le=1, description="CE over this share of the hardest pixels")
    center_weight: float = Field(200.0, ge=0, description="Panoptic-DeepLab: weight of the centre MSE")
    offset_weight: float = Field(0.01, ge=0, description="Panoptic-DeepLab: weight of the offset L1")
    center_sigma: float = Field(4.0, gt=0, description="Panoptic-DeepLab: Gaussian sigma of a centre target (px)")
    center_threshold: float = Field(0.1, ge=0, description="Panoptic-DeepLab: heatmap peaks above this are centres")
    nms_kernel: int = Field(7, ge=1, description="Panoptic-DeepLab: max-pooling window of the centre NMS (odd)")
    top_k: int = Field(100, ge=1, description="Panoptic-DeepLab: at most this many centres per image")
    instance_score_threshold: float = Field(0.5, ge=0, le=1, description="Panoptic FPN: detections placed from here")
    overlap_threshold: float = Field(0.5, ge=0, le=1,
                                     description="Panoptic FPN: skip a detection more than this share covered")
    stuff_area: int = Field(32, ge=0, description="stuff regions smaller than this (px) become VOID")

    @field_validator("nms_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd, so the window centres on the pixel")
        return value


class ModelParams(Section):
    name: str = Field("lraspp_mobilenet_v3_large", description="a model of the catalog (segpipe.catalog)")
    weights: str | None = Field(
        None, description="null (from scratch), backbone, full, pretrained (the pretrain stage's encoder) or a path")
    unet: UNetParams = UNetParams()
    mask_rcnn: MaskRCNNParams = MaskRCNNParams()
    panoptic: PanopticParams = PanopticParams()

    @field_validator("name")
    @classmethod
    def _in_catalog(cls, value: str) -> str:
        return _refuse(name_problem(value), value)

    @field_validator("weights")
    @classmethod
    def _weights_exist(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        return _refuse(weights_problem(name, value), value) if name else value


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
    amp: Literal["bf16", "fp16", "off"] = Field("bf16", description="mixed precision on CUDA only")
    channels_last: bool = True


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
    objective: str | None = Field(
        None, description="validation metric the sweep optimises; null = the task's (val_miou, val_mask_ap, val_pq)")
    allow_test_objective: bool = Field(
        False, description="let objective name a test metric (an experiment that compares arms, not a selection)")
    direction: Literal["maximize", "minimize"] = "maximize"
    space: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict, description="dotted key -> values or range")
    results: str | None = Field(None, description="a JSON file for the trials and, with base.seed in a grid's space, "
                                                  "the mean and std of each arm over its seeds")

    @model_validator(mode="after")
    def _selects_on_validation(self) -> SweepParams:
        if self.objective and self.objective.startswith("test_") and not self.allow_test_objective:
            raise ValueError(f"objective '{self.objective}' is a test metric: choosing hyperparameters on the test "
                             f"set makes the reported score optimistic; use val_{self.objective.removeprefix('test_')}"
                             f" (or null), or set allow_test_objective: true for an experiment that selects nothing")
        return self

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> SweepParams:
        if self.method == "grid" and any(isinstance(v, RangeSpec) for v in self.space.values()):
            raise ValueError("grid search needs a list of values for every key; use random or bayes for ranges")
        return self


class OrchestrationParams(Section):
    retries: int = Field(1, ge=0, description="retries of a stage task after a transient failure")
    retry_delay_seconds: float = Field(10.0, ge=0)
    timeout_seconds: float = Field(86400.0, gt=0, description="a stage or sweep trial running longer is killed as "
                                                                "hung and fails, naming it")
    cron: str = Field("0 3 * * *", description="schedule of the deployments")
    timezone: str = "UTC"
    work_pool: str = "segpipe-cpu"
    sweep: SweepParams = SweepParams()


class Params(Section):
    task: str = Field("semantic", description="semantic, instance or panoptic (segpipe.catalog.TASKS)")
    base: BaseParams = BaseParams()
    ingest: IngestParams = IngestParams()
    clean: CleanParams = CleanParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    pretrain: PretrainParams = PretrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()
    orchestration: OrchestrationParams = OrchestrationParams()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return _refuse(task_problem(value), value)

    @model_validator(mode="after")
    def _model_fits_task(self) -> Params:
        problem = model_problem(self.task, self.model.name)
        if problem:
            raise ValueError(problem)
        return self


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at the parent of ``loc`` (for 'did you mean' hints)."""
    model: Any = Params
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _data_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-member tags (``int``, ``list[float]``): only keys the data has."""
    kept, node = [], data
    for part in loc:
        if isinstance(node, dict):
            match = next((k for k in node if str(k) == str(part)), None)
            if match is not None:
                kept.append(part)
                node = node[match]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            kept.append(part)
            node = node[part]
    return tuple(kept)


def _describe(error: dict[str, Any], source: str, data: Any) -> str:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    if error["type"] != "missing":
        loc = _data_loc(data, loc) or loc
    key = ".".join(str(part) for part in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1, cutoff=0.6)
        parent = "".join(f"{part}." for part in loc[:-1])
        hint = f"did you mean '{parent}{close[0]}'?" if close else "check the spelling; see params.yaml in the project"
        return f"{source}: unknown key '{key}' ({hint})"
    got = error.get("input")
    detail = error["msg"].removeprefix("Value error, ")
    if isinstance(got, str) and kind in {"float_type", "int_type", "bool_type"}:
        detail += "; write it without quotes"
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {key or '<top level>'}: {detail}{shown}"


def parse_params(data: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping strictly (no quoted numbers); raise :class:`SegpipeError` naming the first bad key.

    Validation goes through JSON so that YAML lists fill tuples while strict mode still refuses ``"0.003"``
    for a number or ``1`` for a boolean.
    """
    try:
        text = json.dumps(data or {}, default=str)
    except (TypeError, ValueError) as exc:
        raise SegpipeError(f"{source}: holds a value that is not plain YAML data ({exc})") from None
    try:
        return Params.model_validate_json(text, strict=True)
    except ValidationError as exc:
        data = json.loads(text)
        # of the alternatives a union reports, the one that got deepest into the value says most
        errors = sorted(exc.errors(), key=lambda e: -len(_data_loc(data, tuple(e["loc"]))))
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SegpipeError(_describe(errors[0], source, data) + more) from None


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
