"""Segmentation tasks behind one interface (:mod:`segpipe.tasks.base`); which tasks exist, and the models each
trains, is in :mod:`segpipe.catalog`. ``get_task`` imports a task's module only when it is asked for."""

from __future__ import annotations

from segpipe.catalog import TASKS, load_object, task_problem
from segpipe.errors import SegpipeError


def get_task(name: str):  # -> segpipe.tasks.base.Task (imported lazily)
    """The task called ``name`` (``params.task``, or ``task`` in a stored model config)."""
    if name not in TASKS:
        raise SegpipeError(f"task: {task_problem(name)}")
    return load_object(TASKS[name])()
