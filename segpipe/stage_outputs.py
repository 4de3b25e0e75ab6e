"""The files and folders the stages write (dvc.yaml's ``outs``, ``metrics`` and ``plots`` entries), and removing
exactly those: ``make clean-outputs`` never touches source data, downloads or anything else of the user's."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

DVC_YAML = Path("dvc.yaml")
STATE = (Path("models/checkpoints"),)  # what the stages keep besides their outputs (resume checkpoints)


def stage_outputs(dvc_yaml: Path = DVC_YAML) -> list[Path]:
    """Every path a stage of ``dvc_yaml`` declares as its output, relative to the project."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    paths = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                paths.append(Path(entry if isinstance(entry, str) else next(iter(entry))))
    return list(dict.fromkeys(paths))


def remove_outputs(root: Path = Path(".")) -> list[Path]:
    """Delete the stages' outputs and state under ``root``; a link is removed, never what it points at."""
    removed = []
    for relative in [*stage_outputs(root / DVC_YAML), *STATE]:
        path = root / relative
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(relative)
    return removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="List (or --remove) the outputs the stages of dvc.yaml write.")
    parser.add_argument("--remove", action="store_true", help="delete them (links only, never their targets)")
    args = parser.parse_args(argv)
    paths = remove_outputs() if args.remove else stage_outputs()
    print("\n".join(str(p) for p in paths) or "no outputs")


if __name__ == "__main__":
    main()
