"""Worker processes: a parallel map with a progress bar (every long per-sample loop) and the start method of every
worker, DataLoader workers included.

Workers start from a fork server, never by forking the caller: a stage may run inside a process that already holds
threads (a Prefect worker, a test session that trained a model, gloo's threads under DDP, ONNX Runtime or MLflow
helpers), and a process forked from one can inherit a lock that no thread will ever release and hang. The fork server
imports torch and the datasets once, so a worker starts as fast as a fork.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from types import ModuleType
from typing import TypeVar

from segpipe.progress import progress

T = TypeVar("T")
R = TypeVar("R")


PRELOAD = ["segpipe.data.dataset", "segpipe.tasks"]  # what every worker needs, imported once


def worker_context() -> BaseContext:
    """The start method of every worker process: the fork server (see the module's docstring). A worker runs the
    main module again (as ``__mp_main__``), so what that module imports is preloaded too (``python -m stages.train``:
    1.3 s less for each worker)."""
    multiprocessing.set_forkserver_preload(["__main__", *_imported_by_main(), *PRELOAD])  # used when it starts
    return multiprocessing.get_context("forkserver")


def _imported_by_main() -> list[str]:
    """The modules whose names or functions the main module imported."""
    names = {value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
             for value in vars(sys.modules["__main__"]).values()}
    return sorted(name for name in names if isinstance(name, str) and name in sys.modules and name != "__main__")


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
        with ProcessPoolExecutor(max_workers=n_proc, mp_context=worker_context()) as pool:
            results = []
            for result in pool.map(fn, items, chunksize=chunksize):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()
