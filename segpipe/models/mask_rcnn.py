"""Mask R-CNN: torchvision's R50-FPN (v1, v2) and a light ResNet-18 FPN for CPUs, all trainable from scratch.

From scratch, batch norm with 2-8 images per batch gives poor statistics, so the backbones and FPNs built here
normalise with GroupNorm (as in "Rethinking ImageNet Pre-training", He et al. 2019). The RoI heads do not: they see
hundreds of RoIs per batch, and GroupNorm on a head breaks the exported model on an image without detections (its
ONNX reshape cannot split an empty batch), so they use torchvision's choice (batch norm in v2, none in v1).

``maskrcnn_resnet18_fpn`` is the CPU model: ResNet-18 costs about a fifth of ResNet-50's compute, and its FPN keeps
every level from stride 4 up (4, 8, 16, 32, plus a pooled 64) so that small objects on small images still meet
anchors of their size; a MobileNetV3 FPN (torchvision's ``mobilenet_backbone``) has only strides 16 and 32. The
images arrive normalised by segpipe's own transform, so the model's transform only resizes (mean 0, std 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet18, resnet50
from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights
from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from segpipe.errors import SegpipeError
from segpipe.models.download import download_guard

GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when the channels do not divide)."""
    groups = GROUPS
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


def _detector_options(options: dict[str, Any]) -> dict[str, Any]:
    sizes = tuple((int(size),) for size in options["anchor_sizes"])
    return {
        "min_size": options["min_size"], "max_size": options["max_size"],
        "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0],
        "rpn_anchor_generator": AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        "box_detections_per_img": options["detections_per_image"],
        "box_score_thresh": options["score_threshold"],
    }


def _resnet_fpn(arch: str, fpn_channels: int) -> BackboneWithFPN:
    """A GroupNorm ResNet with a GroupNorm FPN over all four stages (strides 4-32) plus a max-pooled level."""
    body = {"resnet18": resnet18, "resnet50": resnet50}[arch](weights=None, norm_layer=group_norm)
    stage2 = body.inplanes // 8  # channels of layer1's output
    return BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                           [stage2 * 2**i for i in range(4)], fpn_channels, LastLevelMaxPool(), norm_layer=group_norm)


def build_mask_rcnn(name: str, num_classes: int, options: dict[str, Any], weights: str | None = None) -> nn.Module:
    """Mask R-CNN ``name`` for ``num_classes`` (background included); ``weights`` None, 'full' or 'backbone'."""
    detector = _detector_options(options)
    if name == "maskrcnn_resnet18_fpn":
        if weights:
            raise SegpipeError(f"model.weights: no published '{weights}' weights exist for {name}")
        return _light_mask_rcnn(num_classes, options["fpn_channels"], detector)
    if name not in ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"):
        raise SegpipeError(f"model.name '{name}' is not a Mask R-CNN")
    v2 = name.endswith("_v2")
    builder = tv_mask_rcnn.maskrcnn_resnet50_fpn_v2 if v2 else tv_mask_rcnn.maskrcnn_resnet50_fpn
    if weights == "full":
        full = MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT if v2 else MaskRCNN_ResNet50_FPN_Weights.DEFAULT
        model = download_guard(lambda: builder(weights=full, **detector), f"{name} COCO weights")
        _replace_predictors(model, num_classes)
        return model
    if weights == "backbone":
        return download_guard(lambda: builder(weights=None, weights_backbone=ResNet50_Weights.DEFAULT,
                                              num_classes=num_classes, **detector), f"{name} ImageNet backbone weights")
    backbone = _resnet_fpn("resnet50", 256)
    if v2:  # torchvision's v2 recipe: deeper RPN head, conv box head, batch-normalised heads
        anchors = detector["rpn_anchor_generator"].num_anchors_per_location()[0]
        return MaskRCNN(backbone, num_classes, rpn_head=RPNHead(256, anchors, conv_depth=2),
                        box_head=FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d),
                        mask_head=MaskRCNNHeads(256, [256] * 4, 1, norm_layer=nn.BatchNorm2d), **detector)
    return MaskRCNN(backbone, num_classes, **detector)


def build_instance_model(config: dict[str, Any], published: str | None = None) -> InstanceSegmenter:
    """The instance model of a model config: Mask R-CNN ``config["name"]`` over its object classes."""
    detector = build_mask_rcnn(config["name"], len(config["class_ids"]) + 1, config["mask_rcnn"], published)
    return InstanceSegmenter(detector, config["class_ids"])


def _light_mask_rcnn(num_classes: int, channels: int, detector: dict[str, Any]) -> MaskRCNN:
    """ResNet-18 FPN with heads sized for CPUs: ``channels``-wide FPN and mask head, a 256-d box head, 128 sampled
    RoIs per image and 300 proposals kept after NMS (600 before) in training. torchvision's defaults (256 channels,
    512 RoIs, 2000 proposals) cost ~4x more per step; 300 proposals cover small images with few objects."""
    backbone = _resnet_fpn("resnet18", channels)
    box_head = TwoMLPHead(channels * 7 * 7, 256)
    return MaskRCNN(backbone, None, box_head=box_head, box_predictor=FastRCNNPredictor(256, num_classes),
                    box_batch_size_per_image=128, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                    rpn_pre_nms_top_n_test=600, rpn_post_nms_top_n_test=300,
                    mask_head=MaskRCNNHeads(channels, [channels] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(channels, channels, num_classes), **detector)


def _replace_predictors(model: MaskRCNN, num_classes: int) -> None:
    """Fresh box and mask predictors for ``num_classes`` on a COCO-trained model."""
    box = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(box.cls_score.in_features, num_classes)
    mask = model.roi_heads.mask_predictor
    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask.conv5_mask.in_channels, 256, num_classes)


class InstanceSegmenter(nn.Module):
    """A detector whose classes are the dataset's object classes (``isthing``), speaking canonical class ids.

    The detector predicts background + one label per object class; targets arrive and detections leave with the
    canonical ids, so stuff classes never take a slot in the box and mask predictors.
    """

    def __init__(self, detector: MaskRCNN, class_ids: list[int]) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("class_ids", torch.tensor([0, *class_ids], dtype=torch.int64))
        lookup = torch.zeros(max(class_ids, default=0) + 1, dtype=torch.int64)
        lookup[torch.tensor(class_ids, dtype=torch.int64)] = torch.arange(1, len(class_ids) + 1)
        self.register_buffer("lookup", lookup, persistent=False)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        """Loss terms when given targets (training), else detections per image."""
        if targets is not None:
            return self.detector(images, [{**t, "labels": self.lookup[t["labels"]]} for t in targets])
        return [{**o, "labels": self.class_ids[o["labels"]]} for o in self.detector(images)]


class ExportableInstance(nn.Module):
    """One NCHW image (batch 1) in, detections out as four tensors: what the ONNX model computes."""

    OUTPUTS = ("boxes", "labels", "scores", "masks")

    def __init__(self, model: InstanceSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        detections = self.model([images[0]])[0]
        return tuple(detections[name] for name in self.OUTPUTS)
