"""Which models each task can train: the torch-free table that params validation reads (``model.name``), at the
bottom of the package so that reading params never imports modelling code."""

from __future__ import annotations

# the models each task can train (``model.name``), in the order the README lists them
TASK_MODELS: dict[str, tuple[str, ...]] = {
    "semantic": ("unet", "fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
                 "lraspp_mobilenet_v3_large"),
    "instance": ("maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"),
    "panoptic": ("panoptic_deeplab_unet", "panoptic_fpn_resnet18"),
}


def model_problem(task: str, model_name: str) -> str:
    """Why ``model_name`` cannot serve ``task`` ('' when it can)."""
    if model_name in TASK_MODELS[task]:
        return ""
    return f"model.name '{model_name}' does not do task '{task}'; for {task} use {', '.join(TASK_MODELS[task])}"
