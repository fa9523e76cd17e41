"""docs/robustness.md's threat model names the tests that hold each claim: every one exists.

A claim tied to a test that was renamed or removed would be a claim nothing checks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "robustness.md"
REFERENCE = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def _threat_model() -> str:
    text = DOC.read_text()
    start = text.index("## Threat model")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _test_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        assert path.name not in files, f"two test files named {path.name}: references are ambiguous"
        files[path.name] = path
    return files


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _references() -> list[tuple[str, str]]:
    return sorted(set(REFERENCE.findall(_threat_model())))


def test_the_threat_model_names_tests() -> None:
    section = _threat_model()
    assert len(_references()) >= 40, "the threat model should tie its claims to tests"
    for party in ("snapshot", "granted user", "vfio-user client", "vfio-user server", "boot files"):
        assert party in section, f"the threat model says nothing of the {party}"


@pytest.mark.parametrize(("file", "name"), _references())
def test_every_test_the_threat_model_names_exists(file: str, name: str) -> None:
    files = _test_files()
    assert file in files, f"docs/robustness.md names {file}, which is not a test file"
    assert name in _functions(files[file]), f"{file} has no {name}"
