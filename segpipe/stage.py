"""What every stage's ``main()`` shares: load params, keep telemetry off, turn user errors into one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.params import Params, load_params

TELEMETRY_FILE = Path(__file__).with_name("telemetry_off.mk")  # the one list; the Makefile includes it too


def _telemetry_switches(path: Path) -> dict[str, str]:
    """The variables of ``export NAME ?= value`` lines in ``path``."""
    lines = (line.removeprefix("export ").split("?=") for line in path.read_text().splitlines()
             if line.startswith("export "))
    return {name.strip(): value.strip() for name, value in lines}


TELEMETRY_OFF = _telemetry_switches(TELEMETRY_FILE)


def telemetry_off() -> None:
    """Switch off DVC, MLflow and Prefect telemetry unless the user set these variables themselves."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def warn(stage: str, message: str) -> None:
    """Print a one-line warning that the user should read (stderr, so it shows in logs and terminals alike)."""
    print(f"segpipe {stage}: warning: {message}", file=sys.stderr, flush=True)


def stage_main(name: str, run: Callable[[Params], Any], argv: list[str] | None = None) -> None:
    """Run ``run(params)`` with params from ``params.yaml`` (or the path given); exit 1 with one line on error."""
    telemetry_off()
    if hasattr(sys.stdout, "reconfigure"):  # lines reach `dvc repro > log` and the flow logs as they happen
        sys.stdout.reconfigure(line_buffering=True)
    args = sys.argv[1:] if argv is None else argv
    try:
        run(load_params(args[0] if args else "params.yaml"))
    except SegpipeError as exc:
        print(f"segpipe {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
