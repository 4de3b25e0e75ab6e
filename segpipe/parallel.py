"""Parallel map with a progress bar, used by every long per-sample loop.

Workers start from a fork server, never by forking the caller: a stage may run inside a process that already holds
threads (a Prefect worker, a test session that trained a model, ONNX Runtime or MLflow helpers), and a process forked
from one can inherit a lock that no thread will ever release and hang.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from segpipe.progress import progress

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int) -> int:
    """``0`` means all cores; otherwise the number given (at least 1)."""
    return os.cpu_count() or 1 if workers == 0 else max(1, workers)


def parallel_map(fn: Callable[[T], R], items: Sequence[T] | Iterable[T], *, workers: int, desc: str) -> list[R]:
    """Apply ``fn`` to every item in order, on ``workers`` processes, showing a progress bar.

    ``fn`` must be a module-level function (it is pickled to the worker processes).
    """
    items = list(items)
    n_proc = min(resolve_workers(workers), max(1, len(items)))
    bar = progress(len(items), desc)
    try:
        if n_proc == 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update()
            return results
        chunksize = max(1, min(32, len(items) // (n_proc * 8)))
        with ProcessPoolExecutor(max_workers=n_proc, mp_context=multiprocessing.get_context("forkserver")) as pool:
            results = []
            for result in pool.map(fn, items, chunksize=chunksize):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()
