"""docs/architecture.md's layers hold in the code, and its module map is current.

The import graph and the layers come from ``scripts/module_map.py``, which also writes
the map: what the doc draws is what this test checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import module_map  # noqa: E402 - from scripts/, put on the path just above

ORDER = {layer: i for i, (layer, _) in enumerate(module_map.LAYERS)}


def test_no_module_imports_a_layer_above_its_own() -> None:
    graph = module_map.import_graph()
    upward = sorted(
        f"{name} ({module_map.layer_of(name)}) imports {dep} ({module_map.layer_of(dep)})"
        for name, deps in graph.items()
        for dep in deps
        if ORDER[module_map.layer_of(dep)] > ORDER[module_map.layer_of(name)]
    )
    assert upward == []


def test_the_check_sees_an_upward_import() -> None:
    """The check above can fail: the core importing the CLI is upward."""
    assert (
        ORDER[module_map.layer_of("pyvfio.cli.host")] > ORDER[module_map.layer_of("pyvfio.iommu")]
    )
    assert module_map.layer_of("pyvfio.backends.type1") == "core"
    assert module_map.layer_of("pyvfio._uapi.vfio") == "ABI"


def test_every_module_has_a_layer_and_a_docstring() -> None:
    for name, path in module_map.modules().items():
        module_map.layer_of(name)  # SystemExit naming the module if it has none
        assert module_map._summary(path), f"{name} has no docstring for the module map"


def test_the_module_map_in_the_doc_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/module_map.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
