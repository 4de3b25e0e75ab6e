"""The augmentation policy: built from params as plain data, turned into ``torchvision.transforms.v2``.

Two parts. The *sample* part runs per sample in the DataLoader workers on uint8 data: samples are dicts of
tv_tensors, so image, semantic mask, instance masks and boxes move together; label maps are resampled with
nearest, and pixels that rotation exposes become ``ignore`` in the semantic mask. The *device* part runs on
whole batches where the model lives (GPU or CPU): to float, gaussian noise (training only), normalise. Shipping
uint8 batches from the workers moves a quarter of the bytes and leaves the float work to the accelerator.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from segpipe.params import AugmentParams


class SemanticMask(tv_tensors.Mask):
    """A class-index map: a Mask whose padding value is the ignore index rather than 0."""


def sample_spec(params: AugmentParams) -> list[dict[str, Any]]:
    """Per-sample training augmentation on uint8 data, as plain dicts (saved beside the cache)."""
    spec: list[dict[str, Any]] = []
    if params.crop_size:
        spec.append({"op": "RandomResizedCrop", "size": list(params.crop_size), "scale": list(params.scale)})
    if params.hflip:
        spec.append({"op": "RandomHorizontalFlip", "p": params.hflip})
    if params.vflip:
        spec.append({"op": "RandomVerticalFlip", "p": params.vflip})
    if params.rotation:
        spec.append({"op": "RandomRotation", "degrees": params.rotation})
    if params.color_jitter.p:
        spec.append({"op": "ColorJitter", **params.color_jitter.model_dump()})
    if params.blur_p:
        spec.append({"op": "GaussianBlur", "p": params.blur_p, "sigma": list(params.blur_sigma)})
    return spec


def input_spec(mean: list[float], std: list[float], noise_std: float = 0.0) -> list[dict[str, Any]]:
    """uint8 -> float in [0, 1], gaussian noise when asked, normalise: what every model input goes through."""
    noise = [{"op": "GaussianNoise", "sigma": noise_std}] if noise_std else []
    return [{"op": "ToFloat"}, *noise, {"op": "Normalize", "mean": list(mean), "std": list(std)}]


def device_spec(params: AugmentParams, train: bool) -> list[dict[str, Any]]:
    """Batch steps on the model's device: the model input, with noise when training."""
    return input_spec(params.normalize.mean, params.normalize.std, params.noise_std if train else 0.0)


def _build_one(step: dict[str, Any], ignore_index: int) -> v2.Transform:
    op = step["op"]
    args = {k: v for k, v in step.items() if k != "op"}
    if op == "RandomResizedCrop":
        return v2.RandomResizedCrop(args["size"], scale=tuple(args["scale"]), antialias=True)
    if op == "RandomHorizontalFlip":
        return v2.RandomHorizontalFlip(args["p"])
    if op == "RandomVerticalFlip":
        return v2.RandomVerticalFlip(args["p"])
    if op == "RandomRotation":
        fill = {tv_tensors.Image: 0, SemanticMask: ignore_index, tv_tensors.Mask: 0}
        return v2.RandomRotation(args["degrees"], fill=fill)
    if op == "ColorJitter":
        p = args.pop("p")
        return v2.RandomApply([v2.ColorJitter(**args)], p=p)
    if op == "GaussianBlur":
        return v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=tuple(args["sigma"]))], p=args["p"])
    if op == "ToFloat":
        return v2.ToDtype(torch.float32, scale=True)
    if op == "GaussianNoise":
        return v2.GaussianNoise(sigma=args["sigma"], clip=True)
    if op == "Normalize":
        return v2.Normalize(args["mean"], args["std"])
    raise ValueError(f"unknown augmentation op '{op}'")


class RefreshInstances:
    """The last step for samples with instances: drop those left with fewer than ``min_pixels`` pixels (a crop cut
    them away) and recompute every box from its mask, which a box transform can only approximate."""

    def __init__(self, min_pixels: int) -> None:
        self.min_pixels = min_pixels

    def __call__(self, sample: dict) -> dict:
        masks = sample["masks"]
        keep = masks.flatten(1).sum(1) >= self.min_pixels if len(masks) else torch.zeros(0, dtype=torch.bool)
        kept = masks[keep]
        sample["masks"] = tv_tensors.wrap(kept, like=masks)
        for key in ("labels", "iscrowd"):
            if key in sample:
                sample[key] = sample[key][keep]
        boxes = masks_to_boxes(kept.bool()) if len(kept) else torch.zeros((0, 4))
        sample["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(masks.shape[-2:]))
        return sample


def build(spec: list[dict[str, Any]], ignore_index: int, with_instances: bool = False,
          min_instance_pixels: int = 1) -> v2.Compose:
    """Turn a policy spec into a v2.Compose over sample dicts; with instances, refresh them after the steps."""
    steps: list[Any] = [_build_one(dict(step), ignore_index) for step in spec]
    if with_instances:
        steps.append(RefreshInstances(min_instance_pixels))
    return v2.Compose(steps)
