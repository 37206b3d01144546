"""The ctypes Structures must match the C compiler's layout of llama.h exactly.

A pin change that adds, removes or moves a field fails here instead of
corrupting memory at run time.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helios_core import _llama
from tests.conftest import LLAMA_CPP


def _c_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "llama.h"', "int main(void) {"]
    for struct in _llama.STRUCTS:
        name = struct.__name__
        lines.append(f'  printf("{name} sizeof %zu\\n", sizeof(struct {name}));')
        for field, _ in struct._fields_:
            lines.append(f'  printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[tuple[str, str], int]:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "the ABI check needs a C compiler (cc)"
    folder = tmp_path_factory.mktemp("abi")
    source, binary = folder / "layout.c", folder / "layout"
    source.write_text(_c_program())
    subprocess.run(
        [cc, "-std=c11", "-I", str(LLAMA_CPP / "include"), "-I", str(LLAMA_CPP / "ggml" / "include"),
         str(source), "-o", str(binary)],
        check=True,
    )
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {(s, f): int(v) for s, f, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("struct", _llama.STRUCTS, ids=lambda s: s.__name__)
def test_struct_size_matches_c(struct, c_layout):
    import ctypes

    assert ctypes.sizeof(struct) == c_layout[(struct.__name__, "sizeof")]


@pytest.mark.parametrize("struct", _llama.STRUCTS, ids=lambda s: s.__name__)
def test_every_field_offset_matches_c(struct, c_layout):
    ours = {name: getattr(struct, name).offset for name, _ in struct._fields_}
    theirs = {name: c_layout[(struct.__name__, name)] for name, _ in struct._fields_}
    assert ours == theirs
