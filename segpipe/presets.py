"""Named params presets shipped with segpipe (segpipe/presets/*.yaml)."""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

import yaml

from segpipe.errors import SegpipeError
from segpipe.fsutil import write_atomic
from segpipe.params import parse_params


def available() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files("segpipe") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def description(name: str) -> str:
    """The first comment line of preset ``name`` (what it is for)."""
    text = (resources.files("segpipe") / "presets" / f"{name}.yaml").read_text()
    comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    return comments[0] if comments else ""


def preset_text(name: str) -> str:
    """The YAML text of preset ``name`` as shipped (it sets only what differs from the defaults), validated."""
    if name not in available():
        raise SegpipeError(f"unknown preset '{name}'; available: {', '.join(available())}")
    text = (resources.files("segpipe") / "presets" / f"{name}.yaml").read_text()
    parse_params(yaml.safe_load(text), f"preset {name}")
    return text


def has_sweep(name: str) -> bool:
    """Whether preset ``name`` sets up an experiment (an ``orchestration.sweep.space``)."""
    return bool(parse_params(yaml.safe_load(preset_text(name))).orchestration.sweep.space)


def full_params_text(name: str) -> str:
    """Preset ``name`` with every section spelled out: dvc.yaml needs each params section it lists to exist."""
    text = preset_text(name)
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    params = parse_params(yaml.safe_load(text), f"preset {name}")
    return header + "\n" + yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)


def backup(path: Path) -> Path | None:
    """Keep a copy of ``path`` as ``<name>.bak`` (``<name>.2.bak``, ... when taken): an earlier backup is never
    overwritten; a file that already has a backup with the same text gets no second one."""
    if not path.exists():
        return None
    text = path.read_text()
    for number in itertools.count(1):
        candidate = path.with_name(f"{path.name}.bak" if number == 1 else f"{path.name}.{number}.bak")
        if not candidate.exists():
            return write_atomic(candidate, lambda p: p.write_text(text))
        if candidate.read_text() == text:
            return candidate
    raise AssertionError("unreachable")


def apply(name: str, params_path: str | Path = "params.yaml") -> tuple[Path, Path | None]:
    """Write preset ``name`` (all sections) over ``params_path``, keeping the old file as a backup; return both
    paths (no backup when there was no file)."""
    text = full_params_text(name)
    params_path = Path(params_path)
    kept = backup(params_path)
    return write_atomic(params_path, lambda p: p.write_text(text)), kept
