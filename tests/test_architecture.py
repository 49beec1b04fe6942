"""ARCHITECTURE.md's one-way data flow, checked on the sources: verifier/ imports neither
jit/ nor unwind/ nor unicorn; jit/ does not import unwind/; benchmarks are never imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "verifier": {"jit", "unwind", "unicorn", "benchmarks"},
    "jit": {"unwind", "benchmarks"},
    "unwind": {"benchmarks"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    for path in sorted((ROOT / package).glob("*.py")):
        bad = imported_packages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_every_module_says_what_it_owns():
    for package in FORBIDDEN:
        for path in sorted((ROOT / package).glob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc, f"{path.relative_to(ROOT)} has no module docstring"
