"""The two panoptic model families as the panoptic task sees them (a :class:`Family` each; the catalog names each
model's family and builder): its loss, its raw outputs (the ONNX model's, per image) and which post-processing
turns them into a panoptic map."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segpipe.catalog import model_entry
from segpipe.models.panoptic import ExportablePanopticFPN, PanopticDeepLab, PanopticFPN
from segpipe.onnx_export import INPUT, SPATIAL_AXES
from segpipe.panoptic_postprocess import PanopticMap, deeplab_panoptic, fpn_panoptic
from segpipe.tasks.base import Criterion
from segpipe.tasks.objects import busiest_input, detection_targets

RawOutputs = list[torch.Tensor]  # one image's outputs in the ONNX model's order, batch dimensions as ONNX has them

def semantic_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, share: float) -> torch.Tensor:
    """Cross-entropy over the labelled pixels, or over the hardest ``share`` of them (hard-pixel mining)."""
    losses = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    losses = losses[target != ignore_index]
    if share < 1 and losses.numel():
        losses = losses.topk(max(1, int(share * losses.numel()))).values
    return losses.mean() if losses.numel() else logits.sum() * 0


def center_targets(targets: list[dict[str, torch.Tensor]], size: tuple[int, int], sigma: float,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Panoptic-DeepLab's targets: a heatmap of Gaussians at the instances' centres of mass (Bx1xHxW), the offsets
    (dy, dx) from each instance pixel to its centre (Bx2xHxW) and where offsets count (Bx1xHxW). Crowd regions
    have neither centre nor offsets."""
    heat = torch.zeros((len(targets), 1, *size), device=device)
    offsets = torch.zeros((len(targets), 2, *size), device=device)
    weight = torch.zeros((len(targets), 1, *size), device=device)
    ys = torch.arange(size[0], device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(size[1], device=device, dtype=torch.float32)[None]
    for b, target in enumerate(targets):
        masks = target["masks"][~target["iscrowd"]].to(device).bool()
        if not len(masks):
            continue
        area = masks.sum((1, 2)).float()
        cy, cx = (masks * ys).sum((1, 2)) / area, (masks * xs).sum((1, 2)) / area
        gauss = torch.exp(-((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2) / (2 * sigma**2))
        heat[b, 0] = gauss.max(0).values
        owner, inside = masks.float().argmax(0), masks.any(0)
        offsets[b, 0] = torch.where(inside, cy[owner] - ys, 0.0)
        offsets[b, 1] = torch.where(inside, cx[owner] - xs, 0.0)
        weight[b, 0] = inside.float()
    return heat, offsets, weight


class DeepLabCriterion(Criterion):
    """Semantic CE (optionally over the hardest pixels), centre MSE and offset L1 on instance pixels, weighted."""

    def __init__(self, settings: dict[str, Any], ignore_index: int) -> None:
        super().__init__()
        self.settings, self.ignore_index = settings, ignore_index

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        settings = self.settings
        semantic, center, offset = model(images)
        target = batch["semantic"].to(images.device).long()
        heat, offsets, weight = center_targets(batch["targets"], tuple(target.shape[-2:]), settings["center_sigma"],
                                               images.device)
        offset_l1 = ((offset.float() - offsets).abs() * weight).sum() / weight.sum().clamp(min=1)
        return {"semantic": settings["semantic_weight"] * semantic_loss(semantic, target, self.ignore_index,
                                                                        settings["hard_pixel_share"]),
                "center": settings["center_weight"] * F.mse_loss(center.float(), heat),
                "offset": settings["offset_weight"] * offset_l1}


class FPNCriterion(Criterion):
    """Mask R-CNN's loss terms plus the weighted semantic CE of the FPN head."""

    def __init__(self, settings: dict[str, Any], ignore_index: int) -> None:
        super().__init__()
        self.settings, self.ignore_index = settings, ignore_index

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        losses, logits = model(list(images), detection_targets(batch, images.device))
        target = batch["semantic"].to(images.device).long()
        losses["loss_semantic"] = self.settings["semantic_weight"] * semantic_loss(
            logits, target, self.ignore_index, self.settings["hard_pixel_share"])
        return losses


class Family:
    """What differs between the panoptic model families: loss, outputs and post-processing."""

    postprocess_name: str
    output_names: tuple[str, ...]

    def criterion(self, settings: dict[str, Any], ignore_index: int) -> Criterion:
        raise NotImplementedError

    def raw_outputs(self, model: nn.Module, images: torch.Tensor) -> list[RawOutputs]:
        raise NotImplementedError

    def onnx_module(self, model: nn.Module) -> nn.Module:
        return model

    def trace_input(self, inputs: list[torch.Tensor], torch_runs: list[RawOutputs]) -> torch.Tensor:
        """The parity input that export traces on."""
        return inputs[0]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        raise NotImplementedError

    def postprocess(self, outputs: RawOutputs, is_thing: torch.Tensor, settings: dict[str, Any]) -> PanopticMap:
        raise NotImplementedError


class DeepLabFamily(Family):
    postprocess_name = "panoptic_deeplab"
    output_names = PanopticDeepLab.OUTPUTS

    def criterion(self, settings: dict[str, Any], ignore_index: int) -> Criterion:
        return DeepLabCriterion(settings, ignore_index)

    def raw_outputs(self, model: nn.Module, images: torch.Tensor) -> list[RawOutputs]:
        outputs = model(images)
        return [[output[i:i + 1] for output in outputs] for i in range(len(images))]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: SPATIAL_AXES for name in (INPUT, *self.output_names)}

    def postprocess(self, outputs: RawOutputs, is_thing: torch.Tensor, settings: dict[str, Any]) -> PanopticMap:
        semantic, center, offset = (output[0] for output in outputs)
        return deeplab_panoptic(semantic, center, offset, is_thing, settings)


class FPNFamily(Family):
    postprocess_name = "panoptic_fpn"
    output_names = ExportablePanopticFPN.OUTPUTS

    def criterion(self, settings: dict[str, Any], ignore_index: int) -> Criterion:
        return FPNCriterion(settings, ignore_index)

    def raw_outputs(self, model: nn.Module, images: torch.Tensor) -> list[RawOutputs]:
        return [[*(found[name] for name in self.output_names[:-1]), found["semantic"].unsqueeze(0)]
                for found in model(list(images))]

    def onnx_module(self, model: nn.Module) -> nn.Module:
        return ExportablePanopticFPN(model).eval()

    def trace_input(self, inputs: list[torch.Tensor], torch_runs: list[RawOutputs]) -> torch.Tensor:
        return busiest_input(inputs, torch_runs)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {INPUT: {2: "height", 3: "width"}, "masks": {0: "detections", 2: "height", 3: "width"},
                **{name: {0: "detections"} for name in ("boxes", "labels", "scores")},
                "semantic": {2: "height", 3: "width"}}

    def postprocess(self, outputs: RawOutputs, is_thing: torch.Tensor, settings: dict[str, Any]) -> PanopticMap:
        boxes, labels, scores, masks, semantic = outputs
        return fpn_panoptic(boxes, labels, scores, masks, semantic[0], is_thing, settings)


FAMILIES: dict[str, Family] = {"panoptic_deeplab": DeepLabFamily(), "panoptic_fpn": FPNFamily()}  # catalog family
BY_POSTPROCESS = {family.postprocess_name: family for family in FAMILIES.values()}


def family_for(model_name: str) -> Family:
    """The family of panoptic model ``model_name`` (as the catalog has it)."""
    return FAMILIES[model_entry(model_name).family]


def postprocess_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The thresholds the post-processing of a model of ``config`` reads."""
    return {**config["panoptic"], "mask_threshold": config["mask_rcnn"]["mask_threshold"]}



def family_of(model: nn.Module) -> Family:
    """The family of a built model."""
    return FAMILIES["panoptic_fpn" if isinstance(model, PanopticFPN) else "panoptic_deeplab"]
