"""The project code each DVC stage imports, derived from the source: dvc.yaml lists exactly these files as the
stage's code dependencies, so a change to any module a stage imports reruns that stage and no other.

Imports are read from the syntax tree of every module the stage reaches, those inside functions included (a lazy
import still runs the code it names); only imports under ``if TYPE_CHECKING:`` are left out. Run
``python -m segpipe.stage_deps`` to see what differs from dvc.yaml and ``--write`` to update dvc.yaml in place.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML

PACKAGES = ("segpipe", "stages", "flows")  # the project's own top-level packages
DVC_YAML = Path("dvc.yaml")


def module_file(name: str, root: Path) -> Path | None:
    """The file of project module ``name`` under ``root`` (a package's ``__init__.py``), None if it is not one."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement of ``tree`` may load (``from a import b``: ``a`` and ``a.b``)."""
    names: set[str] = set()
    skipped = {id(n) for block in ast.walk(tree) if _type_checking_block(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` and the packages that importing it runs first: ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_files(module: str, root: Path = Path(".")) -> set[Path]:
    """The project files that running ``module`` imports, directly or through other project modules."""
    found: set[Path] = set()
    pending = _with_parents(module)
    while pending:
        name = pending.pop()
        path = module_file(name, root)
        if path is None or path in found:
            continue
        found.add(path)
        tree = ast.parse(path.read_text(), str(path))
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            pending.extend(_with_parents(imported))
    return found


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
        code = sorted(p.relative_to(root).as_posix() for p in imported_files(module, root)) if module else []
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
