"""The project code each DVC stage imports, derived from the source: dvc.yaml lists exactly these files as the
stage's code dependencies, so a change to any module a stage imports reruns that stage and no other.

Imports are read from the syntax tree of every module the stage reaches (:mod:`segpipe.import_graph`), those
inside functions and the catalog's ``"module:name"`` references included (a lazy import still runs the code it
names); only imports under ``if TYPE_CHECKING:`` are left out. Run
``python -m segpipe.stage_deps`` to see what differs from dvc.yaml and ``--write`` to update dvc.yaml in place.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML

from segpipe.import_graph import PACKAGES, reached_files

DVC_YAML = Path("dvc.yaml")


def stage_module(command: str) -> str | None:
    """``stages.train`` for ``python -m stages.train`` (None for a command of another shape)."""
    words = command.split()
    return words[words.index("-m") + 1] if "-m" in words and words.index("-m") + 1 < len(words) else None


def is_code(dep: str) -> bool:
    """A dependency that is project code (what :func:`derived_deps` owns), not data or params."""
    return dep.split("/")[0] in PACKAGES


def derived_deps(stages: dict, root: Path = Path(".")) -> dict[str, list[str]]:
    """Stage name -> its dependencies as dvc.yaml should list them: the data ones as they are, then every project
    file its module imports, sorted."""
    out = {}
    for name, stage in stages.items():
        module = stage_module(str(stage.get("cmd", "")))
        data = [dep for dep in stage.get("deps") or [] if not is_code(str(dep))]
        code = sorted(p.relative_to(root).as_posix() for p in reached_files(module, root)) if module else []
        out[name] = [*data, *code]
    return out


def _yaml() -> YAML:
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def differences(dvc_yaml: Path = DVC_YAML) -> list[str]:
    """One line per stage whose listed code dependencies are not exactly what its module imports."""
    stages = _yaml().load(dvc_yaml.read_text())["stages"]
    lines = []
    for name, deps in derived_deps(stages, dvc_yaml.parent).items():
        listed = {str(d) for d in stages[name].get("deps") or [] if is_code(str(d))}
        wanted = {d for d in deps if is_code(d)}
        if listed != wanted:
            lines.append(f"{name}: missing {sorted(wanted - listed)}, not imported {sorted(listed - wanted)}")
    return lines


def write(dvc_yaml: Path = DVC_YAML) -> None:
    """Rewrite each stage's deps in ``dvc_yaml`` as :func:`derived_deps` gives them (comments and order kept)."""
    rt = _yaml()
    document = rt.load(dvc_yaml.read_text())
    for name, deps in derived_deps(document["stages"], dvc_yaml.parent).items():
        listed = document["stages"][name].setdefault("deps", [])
        listed[:] = deps
    out = io.StringIO()
    rt.dump(document, out)
    dvc_yaml.write_text(out.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check (or --write) dvc.yaml's code dependencies against the "
                                                 "imports of each stage's module.")
    parser.add_argument("--write", action="store_true", help="update dvc.yaml in place")
    args = parser.parse_args(argv)
    if args.write:
        write()
    problems = differences()
    print("\n".join(problems) or "dvc.yaml lists exactly the code each stage imports")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
