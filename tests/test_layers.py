"""The layers contract, read from the source with `ast` (nothing is imported, so no library is needed).

helios_core is the engine and knows nothing of the server or the command line; helios_http speaks
HTTP over helios_core and calls no C itself, so ctypes stays in helios_core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "helios_core": ("starlette", "uvicorn", "helios_http", "helios_cli"),
    "helios_http": ("ctypes",),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_from_the_layers_it_must_not_know(package):
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert found == []


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found
