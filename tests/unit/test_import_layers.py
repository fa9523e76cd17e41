"""The package's import graph: no cycle, and the core imports nothing beside it.

The graph is read from the source with ``ast``, imports inside functions included (a
cycle hidden in a function is still a cycle: it only waits for its first call), and
``if TYPE_CHECKING:`` blocks left out (they never run). The core is everything but the
host tools, the VM side, the lab and the CLI, which sit beside it and may import it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyvfio

PACKAGE = Path(pyvfio.__file__).parent
#: What sits beside the core: the core imports none of it.
BESIDE = ("pyvfio.host", "pyvfio.vm", "pyvfio.lab", "pyvfio.cli")
#: The command-line entry point, which is the CLI's.
ENTRY = "pyvfio.__main__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports when its code runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:  # a submodule: from pkg import mod
                    out.add(f"{module}.{alias.name}")
                elif module in MODULES:
                    out.add(module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    out.discard(name)
    return out


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _core() -> Iterator[str]:
    for name in sorted(MODULES):
        if name != ENTRY and not name.startswith(BESIDE):
            yield name


def test_the_graph_is_read() -> None:
    """The reader sees imports at the top, inside functions, relative and of packages."""
    assert "pyvfio.backends.vfio_user" in GRAPH["pyvfio.backends"]  # inside a function
    assert "pyvfio.sysfs" in GRAPH["pyvfio.host.sysfs"]
    assert "pyvfio._uapi.vfio" in GRAPH["pyvfio._uapi"]  # from pyvfio._uapi import vfio
    assert GRAPH["pyvfio.iommu"] >= {"pyvfio.device", "pyvfio.backends", "pyvfio._mem"}
    assert "pyvfio.iommu" not in GRAPH["pyvfio.device"]  # TYPE_CHECKING only
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    assert _cycles(GRAPH) == []


def test_the_core_imports_nothing_beside_it() -> None:
    core = list(_core())
    assert {"pyvfio.iommu", "pyvfio.device", "pyvfio.sysfs", "pyvfio.backends"} <= set(core)
    wrong = {name: sorted(d for d in GRAPH[name] if d.startswith(BESIDE)) for name in core}
    assert {name: deps for name, deps in wrong.items() if deps} == {}


def test_import_pyvfio_leaves_the_vfio_user_client_and_asyncio_alone() -> None:
    """Both come with the first vfio-user device or async wait, not with ``import pyvfio``."""
    code = (
        "import json, sys, pyvfio; "
        "print(json.dumps([m for m in sys.modules if m.startswith(('asyncio', "
        "'pyvfio.vfio_user.', 'pyvfio.host', 'pyvfio.backends.vfio_user'))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("pyvfio.host.sysfs", "pyvfio.sysfs", ("Sysfs", "LIVE", "WriteTimeoutError")),
        ("pyvfio.noiommu", "pyvfio.backends.noiommu", ("NoIommuBackend", "UNSAFE_NOIOMMU")),
        ("pyvfio.iommu", "pyvfio.backends.vfio_user", ("VfioUserBackend",)),
        ("pyvfio.iommu", "pyvfio.viability", ("VIABLE_DRIVERS", "blocking_peers")),
        ("pyvfio.vfio_user.client", "pyvfio.vfio_user", ("SCHEME", "socket_path")),
    ],
)
def test_moved_names_stay_importable_where_they_were(
    old: str, new: str, names: tuple[str, ...]
) -> None:
    import importlib

    before, after = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(before, name) is getattr(after, name), name
