"""The command lines of the flows (``python -m flows.pipeline``, ``python -m flows.sweep``): ``--help`` explains
them, and an argument they do not know is an error before anything starts. (Without them, any argument was
ignored, so ``python -m flows.sweep --help`` started an experiment of several hours.)"""

from __future__ import annotations

import argparse
from typing import Any

import yaml


def flow_parser(module: str, description: str) -> argparse.ArgumentParser:
    """A parser for the command line of ``python -m <module>``, with the project folder every flow takes."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description, allow_abbrev=False)
    parser.add_argument("--project", default=".", help="project folder, holding params.yaml and dvc.yaml (default: .)")
    return parser


def dotted_value(text: str) -> tuple[str, Any]:
    """``train.optimizer.lr=0.001`` -> ``("train.optimizer.lr", 0.001)``; the value is read as YAML, as it would
    be in params.yaml (quote it to keep a string: ``model.name='unet'``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. train.optimizer.lr=0.001)")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"the value of {key.strip()} is not valid YAML: {value!r}") from exc
