"""The project's own import graph, read from the syntax tree of each module: which project modules a module
imports (imports inside functions included, those under ``if TYPE_CHECKING:`` left out), the files a module
reaches, and the circles in the graph.

A catalog reference, a string constant ``"segpipe.x.y:name"``, loads module ``segpipe.x.y`` when
:func:`segpipe.catalog.load_object` is called on it: it counts as code that a stage calling ``load_object`` runs
(:func:`reached_files`) but not as an import statement (:func:`import_circles`), so the catalog sits at the bottom
of the package and still names builders above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGES = ("segpipe", "stages", "flows")  # the project's own top-level packages
REFERENCE = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.\w+)*):\w+$")


def module_file(name: str, root: Path) -> Path | None:
    """The file of project module ``name`` under ``root`` (a package's ``__init__.py``), None if it is not one."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module in file ``path`` under ``root``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _scan(path: Path, module: str) -> tuple[set[str], set[str], bool]:
    """What file ``path`` (module ``module``) names: the modules of its import statements (``from a import b``:
    ``a`` and ``a.b``), the modules of its catalog references, and whether it calls ``load_object``."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    references: set[str] = set()
    loads = False
    skipped = {id(n) for block in ast.walk(tree) if _type_checking_block(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                kept = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                base = ".".join([*parts[:kept], *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and REFERENCE.match(node.value):
            references.add(REFERENCE.match(node.value).group(1))
        elif isinstance(node, ast.Call):
            loads = loads or getattr(node.func, "id", getattr(node.func, "attr", "")) == "load_object"
    return names, references, loads


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement of file ``path`` (module ``module``) names."""
    return _scan(path, module)[0]


def with_parents(name: str) -> list[str]:
    """``a.b.c`` and the packages that importing it runs first: ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def reached_files(module: str, root: Path = Path(".")) -> set[Path]:
    """The project files that running ``module`` may run: what it imports, directly or through other project
    modules, with the packages they live in; and once a reached module calls ``load_object``, what the catalog
    references of every reached module name (a module that only reads the catalog's names never loads those)."""
    found: set[Path] = set()
    references: set[str] = set()
    loads = False
    pending = with_parents(module)
    while pending:
        name = pending.pop()
        path = module_file(name, root)
        if path is not None and path not in found:
            found.add(path)
            imports, named, calls = _scan(path, name)
            pending.extend(parent for imported in imports for parent in with_parents(imported))
            references |= named
            loads = loads or calls
        if not pending and loads and references:
            pending.extend(parent for reference in references for parent in with_parents(reference))
            references = set()
    return found


def import_graph(root: Path = Path("."), packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules its import statements name, for every module of ``packages`` under ``root``.

    Importing ``a.b.c`` also runs packages ``a`` and ``a.b``; those count, except the packages a module lives in
    itself (Python has started them before the module runs, so they are never a circle the module closes)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(p for package in packages for p in (root / package).rglob("*.py")):
        name = module_name(path, root)
        named = imported_names(path, name)
        edges = {parent for imported in named for parent in with_parents(imported)
                 if parent == imported or not name.startswith(f"{parent}.")}
        graph[name] = {edge for edge in edges if edge != name and module_file(edge, root)}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph``: its strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package graph is a few dozen modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles
