"""ctypes declarations of ggml's backend registry (ggml-backend.h), abort hook (ggml.h), GGUF reader (gguf.h)
and RPC entry points.

Hand-written against the pinned headers, like _llama.py. The functions live in
the ggml libraries that libllama links, so they are looked up through its
handle (dlsym searches a library's dependencies too). The RPC backend's own
functions are reached as llama.cpp's tools reach them: through the RPC
registry's proc addresses, typed here with the prototypes of ggml-rpc.h.

Each declaration carries its C prototype as the header spells it;
tests/test_abi.py compiles them against the headers (a prototype that drifted
fails to compile) and checks that the ctypes types match the C ones.
"""

from __future__ import annotations

from ctypes import CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int, c_int64, c_size_t, c_void_p

from helios_core import _llama
from helios_core._declarations import Declarations

ggml_backend_reg_t = c_void_p
ggml_backend_dev_t = c_void_p

# enum ggml_backend_dev_type
GGML_BACKEND_DEVICE_TYPE_CPU = 0
GGML_BACKEND_DEVICE_TYPE_GPU = 1
GGML_BACKEND_DEVICE_TYPE_IGPU = 2
GGML_BACKEND_DEVICE_TYPE_ACCEL = 3
GGML_BACKEND_DEVICE_TYPE_META = 4

# ggml.h: called with the message of a GGML_ABORT, after which ggml calls abort().
ggml_abort_callback_t = CFUNCTYPE(None, c_char_p)

# enum ggml_type
GGML_TYPE_F32 = 0

# enum gguf_type (of a metadata value)
GGUF_TYPE_STRING = 8

gguf_context_p = c_void_p


class gguf_init_params(Structure):
    _fields_ = [("no_alloc", c_bool), ("ctx", c_void_p)]


STRUCTS = [gguf_init_params]  # checked field by field against gguf.h by tests/test_abi.py

# Looked up through libllama's handle: dlsym searches the libraries it links.
_declared = Declarations(lambda: _llama.lib)
_c = _declared.c
FUNCTIONS = _declared.functions
__getattr__ = _declared.module_getattr(globals())
# Reached through ggml_backend_reg_get_proc_address(RPC registry, name): (CFUNCTYPE, C prototype).
RPC_PROCS: dict[str, tuple] = {}


def _proc(prototype: str, restype, *argtypes) -> None:
    name = prototype.split("(")[0].split()[-1].lstrip("*")
    RPC_PROCS[name] = (CFUNCTYPE(restype, *argtypes), prototype)


_c(
    "ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t callback)",
    ggml_abort_callback_t,
    ggml_abort_callback_t,
)
_c("ggml_backend_reg_t ggml_backend_reg_by_name(const char * name)", ggml_backend_reg_t, c_char_p)
_c("const char * ggml_backend_reg_name(ggml_backend_reg_t reg)", c_char_p, ggml_backend_reg_t)
_c(
    "void * ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name)",
    c_void_p,
    ggml_backend_reg_t,
    c_char_p,
)
_c("void ggml_backend_register(ggml_backend_reg_t reg)", None, ggml_backend_reg_t)
_c("ggml_backend_reg_t ggml_backend_load(const char * path)", ggml_backend_reg_t, c_char_p)
_c("size_t ggml_backend_dev_count(void)", c_size_t)
_c("ggml_backend_dev_t ggml_backend_dev_get(size_t index)", ggml_backend_dev_t, c_size_t)
_c("ggml_backend_dev_t ggml_backend_dev_by_type(enum ggml_backend_dev_type type)", ggml_backend_dev_t, c_int)
_c("const char * ggml_backend_dev_name(ggml_backend_dev_t device)", c_char_p, ggml_backend_dev_t)
_c("const char * ggml_backend_dev_description(ggml_backend_dev_t device)", c_char_p, ggml_backend_dev_t)
_c(
    "void ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total)",
    None,
    ggml_backend_dev_t,
    POINTER(c_size_t),
    POINTER(c_size_t),
)
_c("enum ggml_backend_dev_type ggml_backend_dev_type(ggml_backend_dev_t device)", c_int, ggml_backend_dev_t)
_c("ggml_backend_reg_t ggml_backend_dev_backend_reg(ggml_backend_dev_t device)", ggml_backend_reg_t, ggml_backend_dev_t)

_c(
    "struct gguf_context * gguf_init_from_file(const char * fname, struct gguf_init_params params)",
    gguf_context_p,
    c_char_p,
    gguf_init_params,
)
_c("void gguf_free(struct gguf_context * ctx)", None, gguf_context_p)
_c("int64_t gguf_find_key(const struct gguf_context * ctx, const char * key)", c_int64, gguf_context_p, c_char_p)
_c("enum gguf_type gguf_get_kv_type(const struct gguf_context * ctx, int64_t key_id)", c_int, gguf_context_p, c_int64)
_c("const char * gguf_get_val_str(const struct gguf_context * ctx, int64_t key_id)", c_char_p, gguf_context_p, c_int64)
_c("size_t gguf_get_data_offset(const struct gguf_context * ctx)", c_size_t, gguf_context_p)
_c("int64_t gguf_get_n_tensors(const struct gguf_context * ctx)", c_int64, gguf_context_p)
_c(
    "const char * gguf_get_tensor_name(const struct gguf_context * ctx, int64_t tensor_id)",
    c_char_p,
    gguf_context_p,
    c_int64,
)
_c(
    "size_t gguf_get_tensor_offset(const struct gguf_context * ctx, int64_t tensor_id)",
    c_size_t,
    gguf_context_p,
    c_int64,
)
_c(
    "enum ggml_type gguf_get_tensor_type(const struct gguf_context * ctx, int64_t tensor_id)",
    c_int,
    gguf_context_p,
    c_int64,
)
_c("size_t gguf_get_tensor_size(const struct gguf_context * ctx, int64_t tensor_id)", c_size_t, gguf_context_p, c_int64)

_proc("ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)", ggml_backend_reg_t, c_char_p)
_proc(
    "void ggml_backend_rpc_start_server(const char * endpoint, const char * cache_dir, size_t n_threads, "
    "size_t n_devices, ggml_backend_dev_t * devices)",
    None,
    c_char_p,
    c_char_p,
    c_size_t,
    c_size_t,
    POINTER(ggml_backend_dev_t),
)


def rpc_proc(name: str):
    """An RPC backend function by name, typed from ggml-rpc.h; None when the build has no RPC backend."""
    registry = __getattr__("ggml_backend_reg_by_name")(b"RPC")
    if not registry:
        return None
    address = __getattr__("ggml_backend_reg_get_proc_address")(registry, name.encode())
    if not address:
        return None
    prototype, _ = RPC_PROCS[name]
    return prototype(address)
