"""ctypes declarations of vendor/llama.cpp/include/llama.h, and library loading.

Hand-written against the pinned header. The types live in _llama_types.py (re-exported
here); every function is declared with its C prototype (`_c`, _declarations.py), which
tests/test_abi.py compiles against llama.h and checks against the ctypes types.

Only what helios uses is declared. Names follow llama.h exactly so a reader
can grep from one to the other. Nothing here owns memory: model.py,
context.py and batch.py wrap these pointers in Python objects that do.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    c_bool,
    c_char,
    c_char_p,
    c_float,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from helios_core._declarations import Declarations
from helios_core._llama_types import *  # llama.h's types, re-exported beside its functions
from helios_core.errors import LibraryNotFoundError

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


_declared = Declarations(_load)
_c = _declared.c
FUNCTIONS = _declared.functions
__getattr__ = _declared.module_getattr(globals())


# --- functions -------------------------------------------------------------
# Grouped as in llama.h. ctypes releases the GIL around each call, so a
# decode on the engine thread never blocks the event loop.

_c("void llama_backend_init(void)", None)
_c("const char * llama_print_system_info(void)", c_char_p)
_c("void llama_log_set(ggml_log_callback log_callback, void * user_data)", None, ggml_log_callback, c_void_p)
_c("bool llama_supports_gpu_offload(void)", c_bool)
_c("size_t llama_max_devices(void)", c_size_t)

_c("struct llama_model_params llama_model_default_params(void)", llama_model_params)
_c("struct llama_context_params llama_context_default_params(void)", llama_context_params)

_c(
    "struct llama_model * llama_model_load_from_file(const char * path_model, struct llama_model_params params)",
    llama_model_p,
    c_char_p,
    llama_model_params,
)
_c("void llama_model_free(struct llama_model * model)", None, llama_model_p)
_c("const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model)", llama_vocab_p, llama_model_p)
_c("int32_t llama_model_n_ctx_train(const struct llama_model * model)", c_int32, llama_model_p)
_c("int32_t llama_model_n_embd(const struct llama_model * model)", c_int32, llama_model_p)
_c("int32_t llama_model_n_embd_out(const struct llama_model * model)", c_int32, llama_model_p)
_c("int32_t llama_model_n_embd_inp(const struct llama_model * model)", c_int32, llama_model_p)
_c("int32_t llama_model_n_layer(const struct llama_model * model)", c_int32, llama_model_p)
_c("int32_t llama_model_n_swa(const struct llama_model * model)", c_int32, llama_model_p)
_c("uint64_t llama_model_n_params(const struct llama_model * model)", c_uint64, llama_model_p)
_c("uint64_t llama_model_size(const struct llama_model * model)", c_uint64, llama_model_p)
_c(
    "int32_t llama_model_desc(const struct llama_model * model, char * buf, size_t buf_size)",
    c_int32,
    llama_model_p,
    c_char_p,
    c_size_t,
)
_c(
    "int32_t llama_model_meta_val_str(const struct llama_model * model, const char * key, char * buf, size_t buf_size)",
    c_int32,
    llama_model_p,
    c_char_p,
    c_char_p,
    c_size_t,
)
_c("int32_t llama_model_meta_count(const struct llama_model * model)", c_int32, llama_model_p)
_c(
    "int32_t llama_model_meta_key_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size)",
    c_int32,
    llama_model_p,
    c_int32,
    c_char_p,
    c_size_t,
)
_c(
    "const char * llama_model_chat_template(const struct llama_model * model, const char * name)",
    c_char_p,
    llama_model_p,
    c_char_p,
)

_c("int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab)", c_int32, llama_vocab_p)
_c("llama_token llama_vocab_bos(const struct llama_vocab * vocab)", llama_token, llama_vocab_p)
_c("llama_token llama_vocab_eos(const struct llama_vocab * vocab)", llama_token, llama_vocab_p)
_c("llama_token llama_vocab_eot(const struct llama_vocab * vocab)", llama_token, llama_vocab_p)
_c("bool llama_vocab_get_add_bos(const struct llama_vocab * vocab)", c_bool, llama_vocab_p)
_c("bool llama_vocab_is_eog(const struct llama_vocab * vocab, llama_token token)", c_bool, llama_vocab_p, llama_token)
_c(
    "bool llama_vocab_is_control(const struct llama_vocab * vocab, llama_token token)",
    c_bool,
    llama_vocab_p,
    llama_token,
)
_c(
    "enum llama_token_attr llama_vocab_get_attr(const struct llama_vocab * vocab, llama_token token)",
    c_enum,
    llama_vocab_p,
    llama_token,
)
_c(
    "const char * llama_vocab_get_text(const struct llama_vocab * vocab, llama_token token)",
    c_char_p,
    llama_vocab_p,
    llama_token,
)

_c(
    "int32_t llama_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, "
    "llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special)",
    c_int32,
    llama_vocab_p,
    c_char_p,
    c_int32,
    POINTER(llama_token),
    c_int32,
    c_bool,
    c_bool,
)
_c(
    "int32_t llama_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, "
    "int32_t length, int32_t lstrip, bool special)",
    c_int32,
    llama_vocab_p,
    llama_token,
    POINTER(c_char),
    c_int32,
    c_int32,
    c_bool,
)
_c(
    "int32_t llama_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, "
    "int32_t n_tokens, char * text, int32_t text_len_max, bool remove_special, bool unparse_special)",
    c_int32,
    llama_vocab_p,
    POINTER(llama_token),
    c_int32,
    POINTER(c_char),
    c_int32,
    c_bool,
    c_bool,
)

_c(
    "int32_t llama_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, "
    "size_t n_msg, bool add_ass, char * buf, int32_t length)",
    c_int32,
    c_char_p,
    POINTER(llama_chat_message),
    c_size_t,
    c_bool,
    POINTER(c_char),
    c_int32,
)
_c("int32_t llama_chat_builtin_templates(const char ** output, size_t len)", c_int32, POINTER(c_char_p), c_size_t)

_c(
    "struct llama_context * llama_init_from_model(struct llama_model * model, struct llama_context_params params)",
    llama_context_p,
    llama_model_p,
    llama_context_params,
)
_c("void llama_free(struct llama_context * ctx)", None, llama_context_p)
_c("uint32_t llama_n_ctx(const struct llama_context * ctx)", c_uint32, llama_context_p)
_c("uint32_t llama_n_ctx_seq(const struct llama_context * ctx)", c_uint32, llama_context_p)
_c("uint32_t llama_n_batch(const struct llama_context * ctx)", c_uint32, llama_context_p)
_c("uint32_t llama_n_ubatch(const struct llama_context * ctx)", c_uint32, llama_context_p)
_c("uint32_t llama_n_seq_max(const struct llama_context * ctx)", c_uint32, llama_context_p)
_c("llama_memory_t llama_get_memory(const struct llama_context * ctx)", llama_memory_t, llama_context_p)
_c(
    "int32_t llama_set_adapter_cvec(struct llama_context * ctx, const float * data, size_t len, "
    "int32_t n_embd, int32_t il_start, int32_t il_end)",
    c_int32,
    llama_context_p,
    POINTER(c_float),
    c_size_t,
    c_int32,
    c_int32,
    c_int32,
)
_c("enum llama_pooling_type llama_pooling_type(const struct llama_context * ctx)", c_enum, llama_context_p)

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

_c(
    "struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max)",
    llama_batch,
    c_int32,
    c_int32,
    c_int32,
)
_c("int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch)", c_int32, llama_context_p, llama_batch)
_c("void llama_set_causal_attn(struct llama_context * ctx, bool causal_attn)", None, llama_context_p, c_bool)
# media embeddings that attend both ways (Gemma 3)
_c("void llama_synchronize(struct llama_context * ctx)", None, llama_context_p)
_c("float * llama_get_logits(struct llama_context * ctx)", POINTER(c_float), llama_context_p)
# Its row's address (c_void_p): Context.logits makes, and keeps, its own view of the row from it.
_c("float * llama_get_logits_ith(struct llama_context * ctx, int32_t i)", c_void_p, llama_context_p, c_int32)
_c(
    "float * llama_get_embeddings_seq(struct llama_context * ctx, llama_seq_id seq_id)",
    POINTER(c_float),
    llama_context_p,
    llama_seq_id,
)

_c("void llama_memory_clear(llama_memory_t mem, bool data)", None, llama_memory_t, c_bool)
_c(
    "bool llama_memory_seq_rm(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1)",
    c_bool,
    llama_memory_t,
    llama_seq_id,
    llama_pos,
    llama_pos,
)
_c(
    "void llama_memory_seq_cp(llama_memory_t mem, llama_seq_id seq_id_src, llama_seq_id seq_id_dst, "
    "llama_pos p0, llama_pos p1)",
    None,
    llama_memory_t,
    llama_seq_id,
    llama_seq_id,
    llama_pos,
    llama_pos,
)
_c("void llama_memory_seq_keep(llama_memory_t mem, llama_seq_id seq_id)", None, llama_memory_t, llama_seq_id)
_c(
    "llama_pos llama_memory_seq_pos_min(llama_memory_t mem, llama_seq_id seq_id)",
    llama_pos,
    llama_memory_t,
    llama_seq_id,
)
_c(
    "llama_pos llama_memory_seq_pos_max(llama_memory_t mem, llama_seq_id seq_id)",
    llama_pos,
    llama_memory_t,
    llama_seq_id,
)

# One sequence's KV state as bytes (prompt_cache.py, slot_files.py): saved before a slot is reused, restored later.
_c(
    "size_t llama_state_seq_get_size(struct llama_context * ctx, llama_seq_id seq_id)",
    c_size_t,
    llama_context_p,
    llama_seq_id,
)
_c(
    "size_t llama_state_seq_get_data(struct llama_context * ctx, uint8_t * dst, size_t size, llama_seq_id seq_id)",
    c_size_t,
    llama_context_p,
    POINTER(c_uint8),
    c_size_t,
    llama_seq_id,
)
_c(
    "size_t llama_state_seq_set_data(struct llama_context * ctx, const uint8_t * src, size_t size, "
    "llama_seq_id dest_seq_id)",
    c_size_t,
    llama_context_p,
    POINTER(c_uint8),
    c_size_t,
    llama_seq_id,
)

_c(
    "struct llama_perf_context_data llama_perf_context(const struct llama_context * ctx)",
    llama_perf_context_data,
    llama_context_p,
)
_c("void llama_perf_context_reset(struct llama_context * ctx)", None, llama_context_p)

# llama.cpp's own samplers: the ground truth our samplers are tested against.
_c("struct llama_sampler_chain_params llama_sampler_chain_default_params(void)", llama_sampler_chain_params)
_c("struct llama_sampler * llama_sampler_init_greedy(void)", llama_sampler_p)
_c(
    "llama_token llama_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx)",
    llama_token,
    llama_sampler_p,
    llama_context_p,
    c_int32,
)
_c("void llama_sampler_free(struct llama_sampler * smpl)", None, llama_sampler_p)

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
