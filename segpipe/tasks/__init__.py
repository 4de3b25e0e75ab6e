"""Segmentation tasks behind one interface (see :mod:`segpipe.tasks.base`); ``get_task`` picks one by name."""

from __future__ import annotations

from segpipe.errors import SegpipeError
from segpipe.tasks.base import Criterion, Evaluation, Evaluator, ExportCheck, Task

TASK_NAMES = ("semantic", "instance")


def get_task(name: str) -> Task:
    """The task called ``name`` (``params.task``, or ``task`` in a stored model config)."""
    if name == "semantic":
        from segpipe.tasks.semantic import SemanticTask

        return SemanticTask()
    if name == "instance":
        from segpipe.tasks.instance import InstanceTask

        return InstanceTask()
    raise SegpipeError(f"task '{name}' is not available; choose one of {', '.join(TASK_NAMES)}")


__all__ = ["TASK_NAMES", "Criterion", "Evaluation", "Evaluator", "ExportCheck", "Task", "get_task"]
