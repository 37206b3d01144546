"""helios_core/_mtmd.py against mtmd.h and mtmd-helper.h: every prototype compiles, every ctypes type and field matches.

As tests/test_abi.py does for llama.h: a pin that moves a field or changes a
signature fails here instead of corrupting memory.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from helios_core import _llama, _mtmd
from tests.conftest import LLAMA_CPP

HEADERS = ['#include "mtmd.h"', '#include "mtmd-helper.h"']
ENUMS = [name for name in dir(_mtmd) if name.startswith("MTMD_INPUT_CHUNK_TYPE_")]


def _compile(tmp_path, lines: list[str], *, run: bool) -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "the ABI check needs a C compiler (cc)"
    source, binary = tmp_path / "mtmd_abi.c", tmp_path / "mtmd_abi"
    source.write_text("\n".join(lines) + "\n")
    includes = []
    for folder in ("include", "ggml/include", "tools/mtmd"):
        includes += ["-I", str(LLAMA_CPP / folder)]
    command = [cc, "-std=c11", "-Werror", *includes, str(source)]
    command += ["-o", str(binary)] if run else ["-fsyntax-only"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout if run else ""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[tuple[str, str], int]:
    lines = ["#include <stdio.h>", "#include <stddef.h>", *HEADERS, "int main(void) {"]
    lines += [f'  printf("enum {name} %d\\n", (int) {name});' for name in ENUMS]
    for struct in _mtmd.STRUCTS:
        name = struct.__name__
        lines.append(f'  printf("{name} sizeof %zu\\n", sizeof(struct {name}));')
        for field, _ in struct._fields_:
            lines.append(f'  printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines += ["  return 0;", "}"]
    out = _compile(tmp_path_factory.mktemp("mtmd_abi"), lines, run=True)
    return {(s, f): int(v) for s, f, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("struct", _mtmd.STRUCTS, ids=lambda s: s.__name__)
def test_mtmd_struct_layout_matches_c(struct, c_layout):
    assert ctypes.sizeof(struct) == c_layout[(struct.__name__, "sizeof")]
    ours = {name: getattr(struct, name).offset for name, _ in struct._fields_}
    assert ours == {name: c_layout[(struct.__name__, name)] for name, _ in struct._fields_}


@pytest.mark.parametrize("name", ENUMS)
def test_mtmd_enum_value_matches_c(name, c_layout):
    assert getattr(_mtmd, name) == c_layout[("enum", name)]


def test_mtmd_prototypes_are_the_headers_own(tmp_path):
    # Declaring a function again with other types is a compile error in C ("conflicting types").
    _compile(tmp_path, HEADERS + [f"{c};" for _, _, c in _mtmd.FUNCTIONS.values()], run=False)


def test_mtmd_ctypes_match_the_prototypes():
    pointer = ctypes.c_void_p
    c_types = {
        "void": None,
        "bool": ctypes.c_bool,
        "int": ctypes.c_int,
        "int32_t": ctypes.c_int32,
        "uint32_t": ctypes.c_uint32,
        "size_t": ctypes.c_size_t,
        "size_t *": ctypes.POINTER(ctypes.c_size_t),
        "llama_pos": _llama.llama_pos,
        "float *": ctypes.POINTER(ctypes.c_float),
        "const char *": ctypes.c_char_p,
        "const unsigned char *": ctypes.c_char_p,
        "void *": pointer,
        "const llama_token *": ctypes.POINTER(_llama.llama_token),
        "ggml_log_callback": _llama.ggml_log_callback,
        "enum mtmd_input_chunk_type": ctypes.c_int,
        "const struct llama_model *": pointer,
        "mtmd_context *": pointer,
        "const mtmd_context *": pointer,
        "mtmd_bitmap *": pointer,
        "const mtmd_bitmap *": pointer,
        "const mtmd_bitmap * const *": ctypes.POINTER(pointer),
        "mtmd_input_chunk *": pointer,
        "const mtmd_input_chunk *": pointer,
        "mtmd_input_chunks *": pointer,
        "const mtmd_input_chunks *": pointer,
        "const mtmd_input_text *": ctypes.POINTER(_mtmd.mtmd_input_text),
        "struct mtmd_context_params": _mtmd.mtmd_context_params,
        "const struct mtmd_context_params": _mtmd.mtmd_context_params,
        "struct mtmd_caps": _mtmd.mtmd_caps,
        "struct mtmd_helper_init_opt": _mtmd.mtmd_helper_init_opt,
        "struct mtmd_helper_bitmap_wrapper": _mtmd.mtmd_helper_bitmap_wrapper,
        "const mtmd_image_tokens *": pointer,
        "struct mtmd_decoder_pos": _mtmd.mtmd_decoder_pos,
        "struct llama_context *": pointer,
        "llama_seq_id": _llama.llama_seq_id,
        "llama_pos *": ctypes.POINTER(_llama.llama_pos),
    }
    for name, (restype, argtypes, c) in _mtmd.FUNCTIONS.items():
        match = re.fullmatch(rf"(.+?)\s*\b{name}\((.*)\)", c)
        assert match, c
        params = [] if match[2].strip() == "void" else [p.strip() for p in match[2].split(",")]
        declared = [re.sub(r"\s*\b\w+$", "", p).replace("*", " *").replace("  ", " ").strip() for p in params]
        assert c_types[match[1].strip()] == restype, f"{name} returns {match[1]}"
        assert [c_types[t] for t in declared] == argtypes, f"{name}({', '.join(declared)})"


def test_mtmd_is_installed_beside_libllama():
    assert _mtmd.available()
    assert _mtmd.mtmd_default_marker() == b"<__media__>"
