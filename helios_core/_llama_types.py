"""The types of vendor/llama.cpp/include/llama.h: typedefs, constants, callbacks and structs.

Every Structure here is checked field by field against the C compiler's layout by
tests/test_abi.py (STRUCTS lists them), so a pin that moves a field fails a test instead of
corrupting memory. _llama.py re-exports all of it beside the function declarations.
"""

from __future__ import annotations

from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int8,
    c_int32,
    c_size_t,
    c_uint32,
    c_void_p,
)

__all__ = [
    "GGML_LOG_LEVEL_CONT",
    "GGML_LOG_LEVEL_DEBUG",
    "GGML_LOG_LEVEL_ERROR",
    "GGML_LOG_LEVEL_INFO",
    "GGML_LOG_LEVEL_NONE",
    "GGML_LOG_LEVEL_WARN",
    "LLAMA_DEFAULT_SEED",
    "LLAMA_FLASH_ATTN_TYPE_AUTO",
    "LLAMA_FLASH_ATTN_TYPE_DISABLED",
    "LLAMA_FLASH_ATTN_TYPE_ENABLED",
    "LLAMA_LOAD_MODE_MMAP",
    "LLAMA_LOAD_MODE_NONE",
    "LLAMA_POOLING_TYPE_CLS",
    "LLAMA_POOLING_TYPE_LAST",
    "LLAMA_POOLING_TYPE_MEAN",
    "LLAMA_POOLING_TYPE_NONE",
    "LLAMA_POOLING_TYPE_RANK",
    "LLAMA_POOLING_TYPE_UNSPECIFIED",
    "LLAMA_TOKEN_ATTR_BYTE",
    "LLAMA_TOKEN_ATTR_CONTROL",
    "LLAMA_TOKEN_ATTR_NORMAL",
    "LLAMA_TOKEN_ATTR_UNKNOWN",
    "LLAMA_TOKEN_ATTR_UNUSED",
    "LLAMA_TOKEN_ATTR_USER_DEFINED",
    "LLAMA_TOKEN_NULL",
    "STRUCTS",
    "c_enum",
    "ggml_abort_callback",
    "ggml_log_callback",
    "llama_adapter_lora_p",
    "llama_batch",
    "llama_chat_message",
    "llama_context_p",
    "llama_context_params",
    "llama_memory_t",
    "llama_model_p",
    "llama_model_params",
    "llama_perf_context_data",
    "llama_pos",
    "llama_progress_callback",
    "llama_sampler_chain_params",
    "llama_sampler_seq_config",
    "llama_sampler_p",
    "llama_seq_id",
    "llama_token",
    "llama_vocab_p",
]

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
