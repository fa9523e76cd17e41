"""The package's import graph: no cycle, and the core imports nothing beside it.

The graph is read from the source with ``ast``, imports inside functions included (a
cycle hidden in a function is still a cycle: it only waits for its first call), and
``if TYPE_CHECKING:`` blocks left out (they never run). The core is everything but the
host tools, the VM side, the lab and the CLI, which sit beside it and may import it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import module_map  # from scripts/, put on the path just above

#: What sits beside the core: the core imports none of it.
BESIDE = ("pyvfio.host", "pyvfio.vm", "pyvfio.fleet", "pyvfio.lab", "pyvfio.cli")
#: The command-line entry point, which is the CLI's.
ENTRY = "pyvfio.__main__"


MODULES = module_map.modules()
# Read by scripts/module_map.py, which also draws docs/architecture.md's map from it.
GRAPH = module_map.import_graph()


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
