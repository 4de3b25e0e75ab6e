"""Segmentation tasks behind one interface (:mod:`segpipe.tasks.base`).

This module stays import-light (params validation reads :data:`TASK_MODELS`); ``get_task`` imports a task's
module only when it is asked for.
"""

from __future__ import annotations

from segpipe.errors import SegpipeError

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


def get_task(name: str):  # -> segpipe.tasks.base.Task (imported lazily)
    """The task called ``name`` (``params.task``, or ``task`` in a stored model config)."""
    if name == "semantic":
        from segpipe.tasks.semantic import SemanticTask

        return SemanticTask()
    if name == "instance":
        from segpipe.tasks.instance import InstanceTask

        return InstanceTask()
    if name == "panoptic":
        from segpipe.tasks.panoptic import PanopticTask

        return PanopticTask()
    raise SegpipeError(f"task '{name}' is not available; choose one of {', '.join(TASK_MODELS)}")
