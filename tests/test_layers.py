"""The layers contract, read from the source with `ast` (nothing is imported, so no library is needed).

helios_core is the engine and knows nothing of the server or the command line; helios_http speaks
HTTP over helios_core and calls no C itself, so ctypes stays in helios_core. The command line
(helios_cli) sits on top of both; the one edge from helios_http up to it is listed in ALLOWED.
Benchmarks import no test module: what they share with the tests is in benchmarks/harness.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "helios_core": ("starlette", "uvicorn", "helios_http", "helios_cli"),
    "helios_http": ("ctypes", "helios_cli"),
    "benchmarks": ("tests",),
}
# server.py builds the server from the parsed command line through options.py's helpers, which
# take the argparse Namespace; the edge goes once the command line builds a Runtime and hands it over.
ALLOWED = {("helios_http/server.py", "helios_cli.options")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_from_the_layers_it_must_not_know(package):
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package] and (path.relative_to(ROOT).as_posix(), name) not in ALLOWED
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


# The engine's decisions (slots, admission, the plan, the commit) touch no C: the runner does (llama_runner.py),
# so they run on a scripted runner in tests. worker.py may name Context, to wrap one in a LlamaRunner.
PURE_ENGINE = ("scheduler.py", "commit.py", "slots.py", "runner.py", "request.py")
C_TOUCHING = ("ctypes", "helios_core._llama", "helios_core.context", "helios_core.batch", "helios_core.lora")
C_TOUCHING += ("helios_core.media_step", "helios_core.prompt_cache")


@pytest.mark.parametrize("module", PURE_ENGINE)
def test_the_scheduler_and_the_commit_import_no_context_batch_or_ctypes(module):
    path = ROOT / "helios_core" / "engine" / module
    assert [f"{module}:{line} imports {name}" for line, name in _imports(path) if name in C_TOUCHING] == []
