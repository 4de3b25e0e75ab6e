"""Segmentation tasks behind one interface (:mod:`segpipe.tasks.base`).

``get_task`` imports a task's module only when it is asked for; which models each task trains is in
:mod:`segpipe.catalog`.
"""

from __future__ import annotations

from segpipe.catalog import TASK_MODELS
from segpipe.errors import SegpipeError


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
