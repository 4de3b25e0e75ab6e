"""Progress that shows wherever the output goes: a bar on a terminal, plain lines in logs.

Outside a terminal (CI, ``dvc repro > log``, Prefect task logs) a bar is invisible, so the same calls print one
line every ``LOG_INTERVAL_S`` seconds (done/total, rate, ETA) and one when the work ends, on stdout beside the
stage's own summary lines (stderr stays for warnings and the one-line error).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_INTERVAL_S = 15.0


def duration(seconds: float) -> str:
    """'42s', '3m 05s' or '1h 02m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class LogLines:
    """The part of tqdm's interface the pipeline uses, printing lines instead of redrawing a bar."""

    def __init__(self, total: int, desc: str, unit: str, leave: bool, interval: float = LOG_INTERVAL_S) -> None:
        self.total, self.desc, self.unit, self.leave, self.interval = total, desc, unit, leave, interval
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            self._print(now, final=False)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if self.leave:
            self._print(time.monotonic(), final=True)

    def _print(self, now: float, final: bool) -> None:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        when = f"in {duration(elapsed)}" if final else f"ETA {duration((self.total - self.n) / rate) if rate else '?'}"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s, {when}{extra})",
              flush=True)


def progress(total: int, desc: str, unit: str = "img", enabled: bool = True, leave: bool = True) -> tqdm | LogLines:
    """A bar on a terminal, log lines elsewhere, nothing when ``enabled`` is false (e.g. not rank 0)."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=leave)
    return LogLines(total, desc, unit, leave)


def track(items: Iterable[T], total: int, desc: str, unit: str = "img") -> Iterator[T]:
    """Iterate ``items`` while showing progress."""
    bar = progress(total, desc, unit)
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        bar.close()
