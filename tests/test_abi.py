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

# Enum values helios passes to llama.cpp, by their names in llama.h.
ENUMS = [name for name in dir(_llama) if name.startswith(("LLAMA_POOLING_TYPE_", "LLAMA_FLASH_ATTN_TYPE_"))]


def _c_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "llama.h"', "int main(void) {"]
    lines += [f'  printf("enum {name} %d\\n", (int) {name});' for name in ENUMS]
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
        [
            cc,
            "-std=c11",
            "-I",
            str(LLAMA_CPP / "include"),
            "-I",
            str(LLAMA_CPP / "ggml" / "include"),
            str(source),
            "-o",
            str(binary),
        ],
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


# --- ggml's backend registry, abort hook and RPC entry points (helios_core/_ggml.py) ----------


def _ggml_prototypes() -> dict[str, tuple[str, object, list]]:
    """name -> (C prototype, ctypes restype, ctypes argtypes) for everything _ggml declares."""
    from helios_core import _ggml

    found = {name: (c, restype, argtypes) for name, (restype, argtypes, c) in _ggml.FUNCTIONS.items()}
    for name, (function_type, c) in _ggml.RPC_PROCS.items():
        found[name] = (c, function_type._restype_, list(function_type._argtypes_))
    return found


def test_ggml_prototypes_are_the_headers_own(tmp_path):
    # Declaring a function again with other types is a compile error in C ("conflicting types").
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "the ABI check needs a C compiler (cc)"
    lines = ['#include "ggml.h"', '#include "ggml-backend.h"', '#include "ggml-rpc.h"', '#include "gguf.h"']
    lines += [f"{c};" for c, _, _ in _ggml_prototypes().values()]
    source = tmp_path / "prototypes.c"
    source.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [cc, "-std=c11", "-fsyntax-only", "-Werror", "-I", str(LLAMA_CPP / "ggml" / "include"), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_ggml_ctypes_match_the_prototypes():
    import ctypes
    import re

    from helios_core import _ggml

    c_types = {
        "void": None,
        "const char *": ctypes.c_char_p,
        "void *": ctypes.c_void_p,
        "size_t": ctypes.c_size_t,
        "size_t *": ctypes.POINTER(ctypes.c_size_t),
        "uint32_t": ctypes.c_uint32,
        "enum ggml_backend_dev_type": ctypes.c_int,
        "ggml_backend_reg_t": ctypes.c_void_p,
        "ggml_backend_dev_t": ctypes.c_void_p,
        "ggml_backend_dev_t *": ctypes.POINTER(ctypes.c_void_p),
        "ggml_abort_callback_t": _ggml.ggml_abort_callback_t,
        "int64_t": ctypes.c_int64,
        "enum ggml_type": ctypes.c_int,
        "enum gguf_type": ctypes.c_int,
        "struct gguf_context *": ctypes.c_void_p,
        "const struct gguf_context *": ctypes.c_void_p,
        "struct gguf_init_params": _ggml.gguf_init_params,
    }
    for name, (c, restype, argtypes) in _ggml_prototypes().items():
        match = re.fullmatch(rf"(.+?)\s*\b{name}\((.*)\)", c)
        assert match, c
        params = [] if match[2].strip() == "void" else [p.strip() for p in match[2].split(",")]
        declared = [re.sub(r"\s*\b\w+$", "", p).replace("*", " *").replace("  ", " ").strip() for p in params]
        assert _is_one_of(restype, c_types[match[1].strip()]), f"{name} returns {match[1]}"
        assert len(declared) == len(argtypes), f"{name}({', '.join(declared)})"
        for i, (c_type, ours) in enumerate(zip(declared, argtypes, strict=True)):
            assert _is_one_of(ours, c_types[c_type]), f"{name}: argument {i} is {c_type}, declared {ours}"


def _is_one_of(ours, theirs) -> bool:
    return ours in theirs if isinstance(theirs, tuple) else ours == theirs


@pytest.mark.parametrize("name", ENUMS)
def test_enum_value_matches_c(name, c_layout):
    assert getattr(_llama, name) == c_layout[("enum", name)]


def test_ggml_structs_match_the_headers(tmp_path):
    import ctypes

    from helios_core import _ggml

    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "gguf.h"', "int main(void) {"]
    for struct in _ggml.STRUCTS:
        name = struct.__name__
        lines.append(f'  printf("{name} sizeof %zu\\n", sizeof(struct {name}));')
        for field, _ in struct._fields_:
            lines.append(f'  printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines += ["  return 0;", "}"]
    source, binary = tmp_path / "layout.c", tmp_path / "layout"
    source.write_text("\n".join(lines))
    subprocess.run(
        [cc, "-std=c11", "-I", str(LLAMA_CPP / "ggml" / "include"), str(source), "-o", str(binary)], check=True
    )
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    theirs = {(s, f): int(v) for s, f, v in (line.split() for line in out.splitlines())}
    for struct in _ggml.STRUCTS:
        assert ctypes.sizeof(struct) == theirs[(struct.__name__, "sizeof")]
        for field, _ in struct._fields_:
            assert getattr(struct, field).offset == theirs[(struct.__name__, field)], f"{struct.__name__}.{field}"


# --- llama.h functions, each declared with its prototype (_llama.FUNCTIONS) -----------------------------


def test_llama_prototypes_are_the_headers_own(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "the ABI check needs a C compiler (cc)"
    lines = ['#include "llama.h"'] + [f"{c};" for _, _, c in _llama.FUNCTIONS.values()]
    source = tmp_path / "llama_prototypes.c"
    source.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [
            cc,
            "-std=c11",
            "-fsyntax-only",
            "-Werror",
            "-I",
            str(LLAMA_CPP / "include"),
            "-I",
            str(LLAMA_CPP / "ggml" / "include"),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_llama_ctypes_match_the_prototypes():
    import ctypes
    import re

    pointer = ctypes.c_void_p
    opaque = (  # handles helios never looks inside: c_void_p
        "struct llama_model *",
        "const struct llama_model *",
        "struct llama_context *",
        "const struct llama_context *",
        "const struct llama_vocab *",
        "struct llama_adapter_lora *",
        "const struct llama_adapter_lora *",
        "struct llama_sampler *",
        "const struct llama_sampler *",
        "llama_memory_t",
        "void *",
    )
    c_types = {
        "void": None,
        "bool": ctypes.c_bool,
        "const char *": ctypes.c_char_p,
        "char *": (ctypes.c_char_p, ctypes.POINTER(ctypes.c_char)),  # a string, or a buffer C writes into
        "const char **": ctypes.POINTER(ctypes.c_char_p),
        "size_t": ctypes.c_size_t,
        "int32_t": ctypes.c_int32,
        "uint32_t": ctypes.c_uint32,
        "int64_t": ctypes.c_int64,
        "uint64_t": ctypes.c_uint64,
        "float": ctypes.c_float,
        "float *": (ctypes.POINTER(ctypes.c_float), ctypes.c_void_p),  # or its address, for a view made once
        "const float *": ctypes.POINTER(ctypes.c_float),
        "uint8_t *": ctypes.POINTER(ctypes.c_uint8),
        "const uint8_t *": ctypes.POINTER(ctypes.c_uint8),
        "llama_token": ctypes.c_int32,
        "llama_token *": ctypes.POINTER(ctypes.c_int32),
        "const llama_token *": ctypes.POINTER(ctypes.c_int32),
        "llama_pos": ctypes.c_int32,
        "llama_seq_id": ctypes.c_int32,
        "enum llama_pooling_type": ctypes.c_int,
        "enum llama_token_attr": ctypes.c_int,
        "struct llama_adapter_lora **": ctypes.POINTER(pointer),
        "ggml_log_callback": _llama.ggml_log_callback,
        "struct llama_batch": _llama.llama_batch,
        "struct llama_model_params": _llama.llama_model_params,
        "struct llama_context_params": _llama.llama_context_params,
        "struct llama_perf_context_data": _llama.llama_perf_context_data,
        "struct llama_sampler_chain_params": _llama.llama_sampler_chain_params,
        "const struct llama_chat_message *": ctypes.POINTER(_llama.llama_chat_message),
        **dict.fromkeys(opaque, pointer),
    }
    assert {"llama_adapter_lora_init", "llama_set_adapters_lora", "llama_adapter_lora_free"} <= set(_llama.FUNCTIONS)
    for name, (restype, argtypes, c) in _llama.FUNCTIONS.items():
        match = re.fullmatch(rf"(.+?)\s*\b{name}\((.*)\)", c)
        assert match, c
        params = [] if match[2].strip() == "void" else [p.strip() for p in match[2].split(",")]
        declared = [
            re.sub(r"\s*\b\w+$", "", p).replace("*", " *").replace("  ", " ").replace("* *", "**").strip()
            for p in params
        ]
        assert _is_one_of(restype, c_types[match[1].strip()]), f"{name} returns {match[1]}"
        assert len(declared) == len(argtypes), f"{name}({', '.join(declared)})"
        for i, (c_type, ours) in enumerate(zip(declared, argtypes, strict=True)):
            assert _is_one_of(ours, c_types[c_type]), f"{name}: argument {i} is {c_type}, declared {ours}"
