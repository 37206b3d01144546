"""ctypes declarations of vendor/llama.cpp/include/llama.h, and library loading.

Hand-written against the pinned header. Every Structure here is checked
field by field against the C compiler's layout by tests/test_abi.py, so a
pin that moves a field fails a test instead of corrupting memory.

Only what helios uses is declared. Names follow llama.h exactly so a reader
can grep from one to the other. Nothing here owns memory: model.py,
context.py and batch.py wrap these pointers in Python objects that do.
"""

from __future__ import annotations

import ctypes
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int8,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from helios_core.errors import LibraryNotFoundError

# --- scalar typedefs -------------------------------------------------------

llama_token = c_int32
llama_pos = c_int32
llama_seq_id = c_int32
c_enum = c_int  # C enums in llama.h are int-sized on every ABI we build for

llama_model_p = c_void_p
llama_context_p = c_void_p
llama_vocab_p = c_void_p
llama_memory_t = c_void_p
llama_sampler_p = c_void_p
llama_adapter_lora_p = c_void_p

LLAMA_TOKEN_NULL = -1
LLAMA_DEFAULT_SEED = 0xFFFFFFFF

# enum ggml_log_level
GGML_LOG_LEVEL_NONE = 0
GGML_LOG_LEVEL_DEBUG = 1
GGML_LOG_LEVEL_INFO = 2
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5

# enum llama_flash_attn_type
LLAMA_FLASH_ATTN_TYPE_AUTO = -1
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0
LLAMA_FLASH_ATTN_TYPE_ENABLED = 1

# enum llama_pooling_type (how an embeddings context pools a sequence's token states)
LLAMA_POOLING_TYPE_UNSPECIFIED = -1
LLAMA_POOLING_TYPE_NONE = 0
LLAMA_POOLING_TYPE_MEAN = 1
LLAMA_POOLING_TYPE_CLS = 2
LLAMA_POOLING_TYPE_LAST = 3
LLAMA_POOLING_TYPE_RANK = 4

# enum llama_load_mode
LLAMA_LOAD_MODE_NONE = 0
LLAMA_LOAD_MODE_MMAP = 1

# enum llama_token_attr (bit flags)
LLAMA_TOKEN_ATTR_UNKNOWN = 1 << 0
LLAMA_TOKEN_ATTR_UNUSED = 1 << 1
LLAMA_TOKEN_ATTR_NORMAL = 1 << 2
LLAMA_TOKEN_ATTR_CONTROL = 1 << 3
LLAMA_TOKEN_ATTR_USER_DEFINED = 1 << 4
LLAMA_TOKEN_ATTR_BYTE = 1 << 5

# --- callbacks -------------------------------------------------------------

ggml_log_callback = CFUNCTYPE(None, c_enum, c_char_p, c_void_p)
llama_progress_callback = CFUNCTYPE(c_bool, c_float, c_void_p)
ggml_abort_callback = CFUNCTYPE(c_bool, c_void_p)

# --- structs ---------------------------------------------------------------


class llama_model_params(Structure):
    _fields_ = [
        ("devices", c_void_p),
        ("tensor_buft_overrides", c_void_p),
        ("n_gpu_layers", c_int32),
        ("split_mode", c_enum),
        ("load_mode", c_enum),
        ("lazy_mode", c_enum),
        ("main_gpu", c_int32),
        ("tensor_split", POINTER(c_float)),
        ("progress_callback", llama_progress_callback),
        ("progress_callback_user_data", c_void_p),
        ("kv_overrides", c_void_p),
        ("vocab_only", c_bool),
        ("check_tensors", c_bool),
        ("use_extra_bufts", c_bool),
        ("no_host", c_bool),
        ("no_alloc", c_bool),
        ("load_mtp", c_bool),
    ]


class llama_context_params(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_seq_max", c_uint32),
        ("n_rs_seq", c_uint32),
        ("n_outputs_max", c_uint32),
        ("n_outputs_max_per_seq", c_uint32),
        ("n_threads", c_int32),
        ("n_threads_batch", c_int32),
        ("ctx_type", c_enum),
        ("rope_scaling_type", c_enum),
        ("pooling_type", c_enum),
        ("attention_type", c_enum),
        ("flash_attn_type", c_enum),
        ("rope_freq_base", c_float),
        ("rope_freq_scale", c_float),
        ("yarn_ext_factor", c_float),
        ("yarn_attn_factor", c_float),
        ("yarn_beta_fast", c_float),
        ("yarn_beta_slow", c_float),
        ("yarn_orig_ctx", c_uint32),
        ("defrag_thold", c_float),
        ("cb_eval", c_void_p),
        ("cb_eval_user_data", c_void_p),
        ("type_k", c_enum),
        ("type_v", c_enum),
        ("abort_callback", ggml_abort_callback),
        ("abort_callback_data", c_void_p),
        ("embeddings", c_bool),
        ("offload_kqv", c_bool),
        ("no_perf", c_bool),
        ("op_offload", c_bool),
        ("swa_full", c_bool),
        ("kv_unified", c_bool),
        ("samplers", c_void_p),
        ("n_samplers", c_size_t),
        ("ctx_other", c_void_p),
    ]


class llama_batch(Structure):
    _fields_ = [
        ("n_tokens", c_int32),
        ("token", POINTER(llama_token)),
        ("embd", POINTER(c_float)),
        ("pos", POINTER(llama_pos)),
        ("n_seq_id", POINTER(c_int32)),
        ("seq_id", POINTER(POINTER(llama_seq_id))),
        ("logits", POINTER(c_int8)),
    ]


class llama_chat_message(Structure):
    _fields_ = [
        ("role", c_char_p),
        ("content", c_char_p),
    ]


class llama_perf_context_data(Structure):
    _fields_ = [
        ("t_start_ms", c_double),
        ("t_load_ms", c_double),
        ("t_p_eval_ms", c_double),
        ("t_eval_ms", c_double),
        ("n_p_eval", c_int32),
        ("n_eval", c_int32),
        ("n_reused", c_int32),
    ]


class llama_sampler_chain_params(Structure):
    _fields_ = [("no_perf", c_bool)]


class llama_sampler_seq_config(Structure):
    _fields_ = [("seq_id", llama_seq_id), ("sampler", llama_sampler_p)]


# Every Structure above, by its C name: the ABI test walks this list.
STRUCTS = [
    llama_model_params,
    llama_context_params,
    llama_batch,
    llama_chat_message,
    llama_perf_context_data,
    llama_sampler_chain_params,
    llama_sampler_seq_config,
]

# --- library loading -------------------------------------------------------

PACKAGE_LIB_DIR = Path(__file__).resolve().parent / "lib"
_LIB_NAMES = ("libllama.so", "libllama.dylib", "llama.dll")


def lib_dir() -> Path:
    """Where libllama is loaded from: $HELIOS_LIB_DIR, else helios_core/lib."""
    override = os.environ.get("HELIOS_LIB_DIR")
    return Path(override) if override else PACKAGE_LIB_DIR


def _load() -> ctypes.CDLL:
    folder = lib_dir()
    for name in _LIB_NAMES:
        path = folder / name
        if path.exists():
            # The libraries carry $ORIGIN rpaths, so ggml is found beside libllama.
            return ctypes.CDLL(str(path))
    raise LibraryNotFoundError(
        f"libllama not found in {folder}: build it with `make build` "
        "(or point HELIOS_LIB_DIR at a folder holding libllama and the ggml libraries)"
    )


# The library loads on first use, not at import: `helios-engine --help` and
# everything else that never calls llama.cpp works without a build.
_SIGNATURES: dict[str, tuple] = {}
_bind_lock = threading.Lock()


def _fn(name: str, restype, *argtypes) -> None:
    _SIGNATURES[name] = (restype, list(argtypes))


# name -> C prototype as llama.h spells it, for the declarations made with _c: tests/test_abi.py
# compiles each against the header (a prototype that drifted fails to compile) and checks that
# the ctypes types match the C ones.
PROTOTYPES: dict[str, str] = {}


def _c(prototype: str, restype, *argtypes) -> None:
    name = prototype.split("(")[0].split()[-1].lstrip("*")
    PROTOTYPES[name] = prototype
    _fn(name, restype, *argtypes)


def _bind() -> None:
    with _bind_lock:
        if "lib" in globals():
            return
        loaded = _load()
        for name, (restype, argtypes) in _SIGNATURES.items():
            f = getattr(loaded, name)
            f.restype = restype
            f.argtypes = argtypes
            globals()[name] = f
        globals()["lib"] = loaded  # last: its presence means every function is bound


def __getattr__(name: str):
    # Called only for names the module does not hold yet (PEP 562): after the
    # first call every function is a plain module global, with no indirection.
    if name == "lib" or name in _SIGNATURES:
        _bind()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- functions -------------------------------------------------------------
# Grouped as in llama.h. ctypes releases the GIL around each call, so a
# decode on the engine thread never blocks the event loop.

_fn("llama_backend_init", None)
_fn("llama_print_system_info", c_char_p)
_fn("llama_log_set", None, ggml_log_callback, c_void_p)
_fn("llama_time_us", c_int64)
_fn("llama_supports_gpu_offload", c_bool)
_fn("llama_max_parallel_sequences", c_size_t)
_fn("llama_max_devices", c_size_t)

_fn("llama_model_default_params", llama_model_params)
_fn("llama_context_default_params", llama_context_params)

_fn("llama_model_load_from_file", llama_model_p, c_char_p, llama_model_params)
_fn("llama_model_free", None, llama_model_p)
_fn("llama_model_get_vocab", llama_vocab_p, llama_model_p)
_fn("llama_model_n_ctx_train", c_int32, llama_model_p)
_fn("llama_model_n_embd", c_int32, llama_model_p)
_fn("llama_model_n_embd_out", c_int32, llama_model_p)
_fn("llama_model_n_layer", c_int32, llama_model_p)
_fn("llama_model_n_swa", c_int32, llama_model_p)
_fn("llama_model_n_params", c_uint64, llama_model_p)
_fn("llama_model_size", c_uint64, llama_model_p)
_fn("llama_model_desc", c_int32, llama_model_p, c_char_p, c_size_t)
_fn("llama_model_meta_val_str", c_int32, llama_model_p, c_char_p, c_char_p, c_size_t)
_fn("llama_model_meta_count", c_int32, llama_model_p)
_fn("llama_model_meta_key_by_index", c_int32, llama_model_p, c_int32, c_char_p, c_size_t)
_fn("llama_model_chat_template", c_char_p, llama_model_p, c_char_p)
_fn("llama_model_has_encoder", c_bool, llama_model_p)

_fn("llama_vocab_n_tokens", c_int32, llama_vocab_p)
_fn("llama_vocab_type", c_enum, llama_vocab_p)
_fn("llama_vocab_bos", llama_token, llama_vocab_p)
_fn("llama_vocab_eos", llama_token, llama_vocab_p)
_fn("llama_vocab_eot", llama_token, llama_vocab_p)
_fn("llama_vocab_get_add_bos", c_bool, llama_vocab_p)
_fn("llama_vocab_is_eog", c_bool, llama_vocab_p, llama_token)
_fn("llama_vocab_is_control", c_bool, llama_vocab_p, llama_token)
_fn("llama_vocab_get_attr", c_enum, llama_vocab_p, llama_token)
_fn("llama_vocab_get_text", c_char_p, llama_vocab_p, llama_token)

_fn(
    "llama_tokenize",
    c_int32,
    llama_vocab_p,
    c_char_p,
    c_int32,
    POINTER(llama_token),
    c_int32,
    c_bool,
    c_bool,
)
_fn(
    "llama_token_to_piece",
    c_int32,
    llama_vocab_p,
    llama_token,
    POINTER(c_char),
    c_int32,
    c_int32,
    c_bool,
)
_fn(
    "llama_detokenize",
    c_int32,
    llama_vocab_p,
    POINTER(llama_token),
    c_int32,
    POINTER(c_char),
    c_int32,
    c_bool,
    c_bool,
)

_fn(
    "llama_chat_apply_template",
    c_int32,
    c_char_p,
    POINTER(llama_chat_message),
    c_size_t,
    c_bool,
    POINTER(c_char),
    c_int32,
)
_fn("llama_chat_builtin_templates", c_int32, POINTER(c_char_p), c_size_t)

_fn("llama_init_from_model", llama_context_p, llama_model_p, llama_context_params)
_fn("llama_free", None, llama_context_p)
_fn("llama_n_ctx", c_uint32, llama_context_p)
_fn("llama_n_ctx_seq", c_uint32, llama_context_p)
_fn("llama_n_batch", c_uint32, llama_context_p)
_fn("llama_n_ubatch", c_uint32, llama_context_p)
_fn("llama_n_seq_max", c_uint32, llama_context_p)
_fn("llama_n_threads", c_int32, llama_context_p)
_fn("llama_n_threads_batch", c_int32, llama_context_p)
_fn("llama_set_n_threads", None, llama_context_p, c_int32, c_int32)
_fn("llama_get_memory", llama_memory_t, llama_context_p)
_fn("llama_set_adapter_cvec", c_int32, llama_context_p, POINTER(c_float), c_size_t, c_int32, c_int32, c_int32)
_fn("llama_pooling_type", c_enum, llama_context_p)

# LoRA adapters (lora.py). An adapter belongs to its model; llama.cpp frees the ones left when the model goes.
_c(
    "struct llama_adapter_lora * llama_adapter_lora_init(struct llama_model * model, const char * path_lora)",
    llama_adapter_lora_p,
    llama_model_p,
    c_char_p,
)
_c("void llama_adapter_lora_free(struct llama_adapter_lora * adapter)", None, llama_adapter_lora_p)
_c(
    "int32_t llama_adapter_meta_val_str(const struct llama_adapter_lora * adapter, const char * key, char * buf, "
    "size_t buf_size)",
    c_int32,
    llama_adapter_lora_p,
    c_char_p,
    c_char_p,
    c_size_t,
)
_c("int32_t llama_adapter_meta_count(const struct llama_adapter_lora * adapter)", c_int32, llama_adapter_lora_p)
_c(
    "int32_t llama_adapter_meta_key_by_index(const struct llama_adapter_lora * adapter, int32_t i, char * buf, "
    "size_t buf_size)",
    c_int32,
    llama_adapter_lora_p,
    c_int32,
    c_char_p,
    c_size_t,
)
_c(
    "int32_t llama_adapter_meta_val_str_by_index(const struct llama_adapter_lora * adapter, int32_t i, char * buf, "
    "size_t buf_size)",
    c_int32,
    llama_adapter_lora_p,
    c_int32,
    c_char_p,
    c_size_t,
)
_c(
    "uint64_t llama_adapter_get_alora_n_invocation_tokens(const struct llama_adapter_lora * adapter)",
    c_uint64,
    llama_adapter_lora_p,
)
# Replaces the context's whole set; a no-op when the set (zero scales left out) is unchanged.
_c(
    "int32_t llama_set_adapters_lora(struct llama_context * ctx, struct llama_adapter_lora ** adapters, "
    "size_t n_adapters, float * scales)",
    c_int32,
    llama_context_p,
    POINTER(llama_adapter_lora_p),
    c_size_t,
    POINTER(c_float),
)

_fn("llama_batch_init", llama_batch, c_int32, c_int32, c_int32)
_fn("llama_batch_free", None, llama_batch)
_fn("llama_decode", c_int32, llama_context_p, llama_batch)
_fn("llama_synchronize", None, llama_context_p)
_fn("llama_get_logits", POINTER(c_float), llama_context_p)
_fn("llama_get_logits_ith", POINTER(c_float), llama_context_p, c_int32)
_fn("llama_get_embeddings_seq", POINTER(c_float), llama_context_p, llama_seq_id)

_fn("llama_memory_clear", None, llama_memory_t, c_bool)
_fn("llama_memory_seq_rm", c_bool, llama_memory_t, llama_seq_id, llama_pos, llama_pos)
_fn("llama_memory_seq_cp", None, llama_memory_t, llama_seq_id, llama_seq_id, llama_pos, llama_pos)
_fn("llama_memory_seq_keep", None, llama_memory_t, llama_seq_id)
_fn("llama_memory_seq_pos_min", llama_pos, llama_memory_t, llama_seq_id)
_fn("llama_memory_seq_pos_max", llama_pos, llama_memory_t, llama_seq_id)

_fn("llama_perf_context", llama_perf_context_data, llama_context_p)
_fn("llama_perf_context_reset", None, llama_context_p)

# llama.cpp's own samplers: the ground truth our samplers are tested against.
_fn("llama_sampler_chain_default_params", llama_sampler_chain_params)
_fn("llama_sampler_init_greedy", llama_sampler_p)
_fn("llama_sampler_sample", llama_token, llama_sampler_p, llama_context_p, c_int32)
_fn("llama_sampler_free", None, llama_sampler_p)

# Backend sampling [EXPERIMENTAL in llama.h] (sampling/backend.py): a chain set on a sequence runs inside
# the compute graph, and the decode leaves its token for that sequence's output row.
_c(
    "struct llama_sampler * llama_sampler_chain_init(struct llama_sampler_chain_params params)",
    llama_sampler_p,
    llama_sampler_chain_params,
)
_c(
    "void llama_sampler_chain_add(struct llama_sampler * chain, struct llama_sampler * smpl)",
    None,
    llama_sampler_p,
    llama_sampler_p,
)
_c("int32_t llama_sampler_chain_n(const struct llama_sampler * chain)", c_int32, llama_sampler_p)
_c("struct llama_sampler * llama_sampler_init_dist(uint32_t seed)", llama_sampler_p, c_uint32)
_c("struct llama_sampler * llama_sampler_init_top_k(int32_t k)", llama_sampler_p, c_int32)
_c("struct llama_sampler * llama_sampler_init_top_p(float p, size_t min_keep)", llama_sampler_p, c_float, c_size_t)
_c("struct llama_sampler * llama_sampler_init_min_p(float p, size_t min_keep)", llama_sampler_p, c_float, c_size_t)
_c("struct llama_sampler * llama_sampler_init_temp(float t)", llama_sampler_p, c_float)
_c(
    "bool llama_set_sampler(struct llama_context * ctx, llama_seq_id seq_id, struct llama_sampler * smpl)",
    c_bool,
    llama_context_p,
    llama_seq_id,
    llama_sampler_p,
)
_c(
    "llama_token llama_get_sampled_token_ith(struct llama_context * ctx, int32_t i)",
    llama_token,
    llama_context_p,
    c_int32,
)
_c(
    "float * llama_get_sampled_probs_ith(struct llama_context * ctx, int32_t i)",
    POINTER(c_float),
    llama_context_p,
    c_int32,
)
_c(
    "uint32_t llama_get_sampled_probs_count_ith(struct llama_context * ctx, int32_t i)",
    c_uint32,
    llama_context_p,
    c_int32,
)
_c(
    "float * llama_get_sampled_logits_ith(struct llama_context * ctx, int32_t i)",
    POINTER(c_float),
    llama_context_p,
    c_int32,
)
_c(
    "uint32_t llama_get_sampled_logits_count_ith(struct llama_context * ctx, int32_t i)",
    c_uint32,
    llama_context_p,
    c_int32,
)
_c(
    "llama_token * llama_get_sampled_candidates_ith(struct llama_context * ctx, int32_t i)",
    POINTER(llama_token),
    llama_context_p,
    c_int32,
)
_c(
    "uint32_t llama_get_sampled_candidates_count_ith(struct llama_context * ctx, int32_t i)",
    c_uint32,
    llama_context_p,
    c_int32,
)
