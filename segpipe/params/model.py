"""The model params: which catalog model, its weights, and the settings of each model family."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator, model_validator

from segpipe.catalog import name_problem, weights_problem
from segpipe.params.section import Section, refuse


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
        return refuse(name_problem(value), value)

    @field_validator("weights")
    @classmethod
    def _weights_exist(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        return refuse(weights_problem(name, value), value) if name else value
