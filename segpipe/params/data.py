"""The params of the data stages: base (seed, device, workers), ingest and its formats, clean, split, augment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from segpipe.params.section import Section


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
