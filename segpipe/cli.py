"""The ``segpipe`` command line: presets (and, later, prediction)."""

from __future__ import annotations

import argparse
import sys

from segpipe import presets
from segpipe.errors import SegpipeError
from segpipe.stage import telemetry_off


def _preset(args: argparse.Namespace) -> None:
    if not args.name:
        print("\n".join(presets.available()))
        return
    path = presets.apply(args.name, args.params)
    print(f"wrote preset {args.name} to {path} (previous params in {path}.bak); now run: dvc repro")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe", description="Reproducible image-segmentation pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    preset = sub.add_parser("preset", help="write a shipped params preset to params.yaml (no name: list them)")
    preset.add_argument("name", nargs="?")
    preset.add_argument("--params", default="params.yaml")
    preset.set_defaults(func=_preset)
    return parser


def main(argv: list[str] | None = None) -> None:
    telemetry_off()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SegpipeError as exc:
        print(f"segpipe: error: {exc}", file=sys.stderr)
        sys.exit(1)
