"""The catalog of tasks and models, at the bottom of the package and free of torch: params validation reads it,
and the model factory (:func:`segpipe.models.build_model`) and :func:`segpipe.tasks.get_task` load what it names.

A model is one :class:`ModelEntry`: its name (``model.name``), its task, its family (models of one family share
their loss and outputs within the task), the ``model.weights`` names it has published weights for, and its builder
(``"module:function"``, called as ``builder(config, published)`` with the model config stored in ``model.pt`` and
'backbone', 'full' or None). Adding a model is one :func:`register` call plus its builder; adding a task is one
module under ``segpipe/tasks/`` plus a line in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.paths import PRETRAINED

# task name -> "module:class" of its :class:`segpipe.tasks.base.Task`
TASKS: dict[str, str] = {
    "semantic": "segpipe.tasks.semantic:SemanticTask",
    "instance": "segpipe.tasks.instance:InstanceTask",
    "panoptic": "segpipe.tasks.panoptic:PanopticTask",
}
PUBLISHED = ("backbone", "full")  # torchvision's published weights: the ImageNet backbone, or the whole model
ENCODER = "pretrained"  # model.weights for the pretrain stage's encoder


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    family: str
    builder: str | Callable[..., Any]  # "module:function", or the function itself
    published: tuple[str, ...] = ()  # the values of PUBLISHED this model can start from
    cpu_channels_last: bool = False  # channels_last trains it faster on the CPU (bench/train_throughput.py)
    cpu_bf16: bool = False  # bf16 autocast trains it faster on a CPU with native BF16, on top of the layout


MODELS: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` to the catalog (a task it names must exist; a name is registered once)."""
    if entry.task not in TASKS:
        raise SegpipeError(f"model {entry.name}: task '{entry.task}' is not one of {', '.join(TASKS)}")
    if entry.name in MODELS:
        raise SegpipeError(f"model {entry.name} is already in the catalog")
    if not set(entry.published) <= set(PUBLISHED):
        raise SegpipeError(f"model {entry.name}: published weights are a subset of {', '.join(PUBLISHED)}")
    MODELS[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove model ``name`` (for code that registered one for a while, such as tests)."""
    MODELS.pop(name, None)


_TORCHVISION = ("fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
# The fastest CPU step path of each model (bench/results/train_throughput.json, cpu_step_paths): the convolutional
# encoder-decoders train fastest in channels_last with bf16; Mask R-CNN, Panoptic FPN (both re-batch their images
# inside the model) and Panoptic-DeepLab in bf16 alone. The ResNet-50 Mask R-CNNs take their family's ResNet-18
# figures.
_CONV_FAST = {"cpu_channels_last": True, "cpu_bf16": True}
_BF16_FAST = {"cpu_channels_last": False, "cpu_bf16": True}
for _entry in (
    ModelEntry("unet", "semantic", "unet", "segpipe.models.unet:build_unet", **_CONV_FAST),
    *(ModelEntry(name, "semantic", "torchvision", "segpipe.models.torchvision_semantic:build_torchvision",
                 PUBLISHED, **_CONV_FAST) for name in _TORCHVISION),
    ModelEntry("maskrcnn_resnet18_fpn", "instance", "mask_rcnn", "segpipe.models.mask_rcnn:build_instance_model",
               **_BF16_FAST),
    *(ModelEntry(name, "instance", "mask_rcnn", "segpipe.models.mask_rcnn:build_instance_model", PUBLISHED,
                 **_BF16_FAST) for name in ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")),
    ModelEntry("panoptic_deeplab_unet", "panoptic", "panoptic_deeplab",
               "segpipe.models.panoptic:build_panoptic_deeplab", **_BF16_FAST),
    ModelEntry("panoptic_fpn_resnet18", "panoptic", "panoptic_fpn", "segpipe.models.panoptic:build_panoptic_fpn",
               **_BF16_FAST),
):
    register(_entry)


def task_models(task: str) -> tuple[str, ...]:
    """The models that train ``task``, in catalog order."""
    return tuple(name for name, entry in MODELS.items() if entry.task == task)


def model_entry(name: str) -> ModelEntry:
    """The catalog entry of model ``name``."""
    if name not in MODELS:
        raise SegpipeError(f"model.name {name_problem(name)}")
    return MODELS[name]


def task_problem(task: str) -> str:
    """Why ``task`` is not one segpipe has ('' when it is)."""
    return "" if task in TASKS else f"'{task}' is not a task segpipe has; choose one of {', '.join(TASKS)}"


def name_problem(model_name: str) -> str:
    """Why ``model_name`` is not a model in the catalog ('' when it is)."""
    return "" if model_name in MODELS else f"'{model_name}' is not in the catalog; choose one of {', '.join(MODELS)}"


def model_problem(task: str, model_name: str) -> str:
    """Why ``model_name`` cannot serve ``task`` ('' when it can)."""
    if model_name not in MODELS:
        return f"model.name {name_problem(model_name)}"
    if MODELS[model_name].task == task:
        return ""
    return f"model.name '{model_name}' does not do task '{task}'; for {task} use {', '.join(task_models(task))}"


def weights_problem(model_name: str, weights: str | None) -> str:
    """Why ``model.weights: weights`` cannot start ``model_name`` ('' when it can)."""
    if weights in PUBLISHED and weights not in model_entry(model_name).published:
        return f"no published '{weights}' weights exist for {model_name}; use null, {ENCODER} or a checkpoint path"
    return ""


def published_weights(weights: str | None) -> str | None:
    """The published weights ``model.weights`` asks for ('backbone', 'full'), None when it names none."""
    return weights if weights in PUBLISHED else None


def weights_file(weights: str | None) -> Path | None:
    """The file a model starts from under ``model.weights``: the pretrain stage's encoder or a checkpoint path;
    None from scratch or from published weights (those are fixed by their name)."""
    if weights is None or weights in PUBLISHED:
        return None
    return PRETRAINED if weights == ENCODER else Path(weights)


def load_object(reference: str | Callable[..., Any]) -> Any:
    """What ``"module:name"`` names (a callable is returned as it is)."""
    if callable(reference):
        return reference
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
