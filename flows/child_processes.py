"""The commands a flow runs (``dvc repro`` of a stage, ``dvc exp run`` of a trial): their output streamed into the
Prefect log, a hung one killed, and a stopped flow stopping them too.

Each command runs in a session of its own, so that a hung one is killed with everything it started; the price is
that a Ctrl-C or a ``kill`` of the flow no longer reaches it by itself. :func:`stops_reach_children` passes those
signals on, so that stopping a flow never leaves a training running behind it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from prefect import get_run_logger

# DVC's hints after every stage are for people at a shell; in a flow's logs they are noise
DVC_HINTS = ("To track the changes with git, run:", "git add ", "To enable auto staging, run:",
             "dvc config core.autostage true", "Use `dvc push` to send your updates to remote storage.")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_running: set[int] = set()  # the process groups of the commands now running, from any thread
_running_lock = threading.Lock()


def _worth_logging(line: str) -> bool:
    return bool(line.strip()) and not line.strip().startswith(DVC_HINTS)


def stream_logged(command: list[str], cwd: str | Path, env: dict[str, str], timeout: float) -> tuple[int, str, bool]:
    """Run ``command``, each line of its output (stdout and stderr) going to the Prefect run's log as it comes;
    killed with its process group after ``timeout`` seconds. Returns the exit code, the whole output and whether
    it was killed as hung."""
    logger = get_run_logger()
    lines = []
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1, start_new_session=True) as process:
        with _running_lock:
            _running.add(process.pid)
        watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in process.stdout:
                lines.append(line)
                if _worth_logging(line):
                    logger.info("%s", line.rstrip())
        finally:
            watchdog.cancel()
            with _running_lock:
                _running.discard(process.pid)
    return process.returncode, "".join(lines), watchdog.finished.is_set() and process.returncode == -signal.SIGKILL


def _pass_on(signum: int) -> None:
    with _running_lock:
        groups = list(_running)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)


@contextlib.contextmanager
def stops_reach_children() -> Iterator[None]:
    """While inside, a SIGINT or SIGTERM to this process goes first to every command :func:`stream_logged` runs,
    then to the handler that was there before (Prefect's, which ends the flow run as crashed or cancelled). Outside
    the main thread, where signals cannot be handled, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        _pass_on(signum)
        before = previous[signum]
        if callable(before):
            before(signum, frame)
        elif before != signal.SIG_IGN:  # the default action: end this process as the signal would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, signal.SIG_DFL if before is None else before)


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def sigterm_exits() -> None:
    """For a flow's command line (``python -m flows.sweep``): a SIGTERM, once the flow run has recorded it, ends
    the process as an exit with status 143, so that the exit handlers run; without it Prefect's temporary API
    server outlives a killed flow."""
    signal.signal(signal.SIGTERM, _exit)

