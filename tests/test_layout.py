"""The package's layout by audience, checked from the source.

- `labsupport` itself is the service students read: it imports neither
  `labsupport.scaleout` nor `labsupport.classroom`.
- `labsupport.scaleout` (the `redis` extra) builds on the service; nothing
  outside it imports it.
- `labsupport.classroom` (checks, plots, demos...) may import anything;
  nothing outside it imports it.
- No import cycles, no module over 500 lines, no function over 80 lines,
  `create_app` at most 60, and docstrings written for JupyterLab's Shift-Tab
  (Markdown backticks, no reStructuredText roles).

Every `import` statement counts, at any depth, including lazy imports inside
functions and those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labsupport"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SOURCES}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imported(name: str, source: str | None = None) -> Iterator[str]:
    """The labsupport modules `name` imports (a `from X import Y` of a module is X.Y)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8") if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name if is_package(name) else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = node.module or ""
            if node.level:
                source = f"{base}.{source}" if source else base
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t in MODULES and t != name)


GRAPH = {name: sorted(set(imported(name))) for name in MODULES}


def layer(name: str) -> str:
    for sub in ("scaleout", "classroom"):
        if name == f"labsupport.{sub}" or name.startswith(f"labsupport.{sub}."):
            return sub
    return "service"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_layer_imports_only_what_it_may(name: str) -> None:
    mine = layer(name)
    for target in GRAPH[name]:
        theirs = layer(target)
        if mine == "service":
            assert theirs == "service", f"{name} (the service) imports {target}"
        elif mine == "scaleout":
            assert theirs != "classroom", f"{name} (scale-out) imports {target}"


def test_there_are_three_layers_and_each_has_modules() -> None:
    assert {layer(name) for name in MODULES} == {"service", "scaleout", "classroom"}


def test_there_are_no_import_cycles() -> None:
    # Depth-first search for a back edge; report the cycle it closes.
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in GRAPH[node]:
            if state.get(target) == "open":
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_the_import_finder_sees_every_kind_of_import() -> None:
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import labsupport.errors
from labsupport import tables
from . import ratelimit
if TYPE_CHECKING:
    from labsupport.server import ServerHandle
def later():
    from labsupport.classroom import checks
"""
    found = set(imported("labsupport._types", source))
    assert found == {
        "labsupport.errors",
        "labsupport.tables",
        "labsupport.ratelimit",
        "labsupport.server",
        "labsupport.classroom.checks",
    }


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_short(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= 500, f"{path.name} has {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            limit = 60 if node.name == "create_app" else 80
            assert length <= limit, f"{path.name}: {node.name} is {length} lines"


ROLE = re.compile(r":[a-z]+(:[a-z]+)?:`")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_docstrings_are_markdown(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node) or ""
            where = f"{path.name}: {getattr(node, 'name', 'module')}"
            assert "``" not in doc, f"{where} uses rST double backticks"
            assert not ROLE.search(doc), f"{where} uses a Sphinx role"


TREE_LINE = re.compile(r"^\s*[│├└─\s]*(_?[A-Z]\w*)(?:\((\w+)\))?\s+(labsupport[\w.]*)")


def test_the_errors_tree_lists_every_exception_class() -> None:
    import builtins
    import importlib
    import inspect
    import pkgutil

    import labsupport
    import labsupport.errors

    listed = {}
    for line in (labsupport.errors.__doc__ or "").splitlines():
        match = TREE_LINE.match(line)
        if match:
            name, base, module = match.groups()
            cls = getattr(importlib.import_module(module), name)
            assert issubclass(cls, BaseException), name
            if base:
                assert issubclass(cls, getattr(builtins, base)), f"{name} is not a {base}"
            listed[name] = cls
    defined = {}
    for info in pkgutil.walk_packages(labsupport.__path__, "labsupport."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                defined[name] = obj
    assert listed == defined


def test_the_readme_module_tables_match_the_tree() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    tables = readme[
        readme.index("The service, what a student reads") : readme.index("## The workbook")
    ]
    rows = [line for line in tables.splitlines() if line.startswith("| `")]
    first_cells = {line.split("|")[1] for line in rows}
    for name in MODULES:
        parts = name.split(".")[1:]
        if not parts or ("labapp" in parts[:1] and len(parts) > 1):
            continue  # the package itself; the lab app's files are not modules
        if parts[0] in ("scaleout", "classroom"):
            if len(parts) == 1:
                continue
            dotted = ".".join(parts[:2])
            assert any(f"`{dotted}`" in row for row in rows), f"README lacks {dotted}"
        elif len(parts) == 1:
            assert any(f"`{parts[0]}`" in cell for cell in first_cells), f"README lacks {name}"
        else:
            row = next((r for r in rows if r.startswith(f"| `{parts[0]}` |")), None)
            assert row is not None, f"README has no row for {parts[0]}"
            if parts[1] != "__init__":
                assert f"`{parts[1]}`" in row, f"README's {parts[0]} row lacks {parts[1]}"
    for cell in first_cells:  # and nothing listed that is not there
        for listed in cell.replace("`", " ").replace(",", " ").split():
            assert f"labsupport.{listed}" in MODULES, f"README lists {listed}, not in labsupport"
