"""The test tree's own rules: pytest imports test folders without __init__.py by
basename, so two test modules with one name in different folders collide."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)
    for special in ("__init__.py", "conftest.py"):  # pytest keys conftests by folder
        names.pop(special, None)
    clashes = sorted(n for n, count in names.items() if count > 1)
    assert not clashes, f"rename one of each: {clashes}"
