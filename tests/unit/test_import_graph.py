"""The package's import graph, read from the source with ast: no cycles, layers kept."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import connector_sync

PACKAGE_DIR = Path(connector_sync.__file__).parent
PACKAGE = "connector_sync"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_statements(nodes: list[ast.AST], *, module_level: bool) -> Iterator[ast.AST]:
    """The import statements among `nodes`: those Python runs when the module is imported,
    or (`module_level` False) every one, in functions and `if TYPE_CHECKING:` blocks too."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue  # a lazy import runs when the function is called, not at import
        elif module_level and isinstance(node, ast.If) and is_type_checking(node.test):
            yield from import_statements(list(node.orelse), module_level=module_level)
        else:
            yield from import_statements(
                list(ast.iter_child_nodes(node)), module_level=module_level
            )


def imported_modules(module: str, *, module_level: bool) -> set[str]:
    """The package's own modules that `module` imports, with the packages holding them
    (importing `a.b.c` runs `a/__init__` and `a/b/__init__` first), except its own
    packages: they are being imported already when `module` runs."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in import_statements([tree], module_level=module_level):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        assert isinstance(node, ast.ImportFrom)
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        targets.add(base)
        targets.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule
    found: set[str] = set()
    for target in targets:
        parts = target.split(".")
        found.update(
            prefix
            for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            if prefix in MODULES and not f"{module}.".startswith(f"{prefix}.")
        )
    return found


def test_the_module_level_import_graph_has_no_cycle() -> None:
    graph = {module: imported_modules(module, module_level=True) for module in MODULES}
    assert graph["connector_sync.connectors.base"] >= {"connector_sync.secrets"}  # it reads
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle (A -> B: A imports B): {' -> '.join(reversed(exc.args[1]))}")
    assert set(order) == set(MODULES)


def test_secrets_imports_nothing_from_connectors_not_even_lazily() -> None:
    imported = imported_modules("connector_sync.secrets", module_level=False)
    assert "connector_sync.exceptions" in imported  # the walk does see its imports
    assert not {m for m in imported if m.startswith("connector_sync.connectors")}


def test_the_walk_sees_lazy_and_type_checking_imports_only_when_asked() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import connector_sync.db\n"
        "if TYPE_CHECKING:\n    from connector_sync import runner\n"
        "else:\n    from . import settings\n"
        "try:\n    from .connectors import registry\nexcept ImportError:\n    pass\n"
        "def lazy():\n    from connector_sync.operations import add_connector\n"
    )
    tree = ast.parse(source)

    def names(module_level: bool) -> set[str]:
        found: set[str] = set()
        for node in import_statements([tree], module_level=module_level):
            if isinstance(node, ast.ImportFrom):
                found.add("." * node.level + (node.module or ""))
            else:
                found.update(alias.name for alias in node.names)
        return found

    assert names(True) == {"typing", "connector_sync.db", ".", ".connectors"}
    assert names(False) == names(True) | {"connector_sync", "connector_sync.operations"}


def reachable(start: set[str]) -> set[str]:
    """Every module of the package that `start` imports, directly or not, lazily too."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imported_modules(module, module_level=False))
    return seen


def imports_rich(module: str) -> bool:
    tree = ast.parse(MODULES[module].read_text())
    for node in import_statements([tree], module_level=False):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
        if any(name == "rich" or name.startswith("rich.") for name in names):
            return True
    return False


def test_the_server_never_imports_the_cli_render_or_rich_not_even_lazily() -> None:
    server = {m for m in MODULES if m.split(".")[:2] == ["connector_sync", "server"]}
    found = reachable(server)
    assert {"connector_sync.operations", "connector_sync.documents"} <= found
    assert "connector_sync.render" not in found
    assert not {m for m in found if m.startswith("connector_sync.cli")}
    assert not {m for m in found if imports_rich(m)}
    assert imports_rich("connector_sync.render")  # the check does see rich where it is


def test_importing_the_server_loads_neither_rich_nor_render() -> None:
    code = (
        "import sys, connector_sync.server.app, connector_sync.server.launch\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'"
        " or m == 'connector_sync.render'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
