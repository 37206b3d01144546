"""ctypes declarations of libmtmd (tools/mtmd/mtmd.h and mtmd-helper.h): images and audio in.

Hand-written against the pinned headers, like _llama.py. Each declaration carries
its C prototype as the header spells it; tests/test_abi_mtmd.py compiles them
against the headers (a prototype that drifted fails to compile), checks that the
ctypes types match the C ones, and checks every Structure field by field.

libmtmd sits beside libllama (vendor/build.py installs both); it is loaded on first
use, so a build without it serves text as before. Nothing here owns memory:
helios_core/projector.py does.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_bool, c_char_p, c_float, c_int, c_int32, c_int64, c_size_t, c_uint32, c_void_p

from helios_core import _llama
from helios_core._declarations import Declarations
from helios_core.errors import LibraryNotFoundError

mtmd_context_p = c_void_p
mtmd_bitmap_p = c_void_p
mtmd_input_chunk_p = c_void_p
mtmd_input_chunks_p = c_void_p
mtmd_image_tokens_p = c_void_p
c_enum = c_int

# enum mtmd_input_chunk_type
MTMD_INPUT_CHUNK_TYPE_TEXT = 0
MTMD_INPUT_CHUNK_TYPE_IMAGE = 1
MTMD_INPUT_CHUNK_TYPE_AUDIO = 2


class mtmd_input_text(Structure):
    _fields_ = [("text", c_char_p), ("text_len", c_size_t), ("add_special", c_bool), ("parse_special", c_bool)]


class mtmd_context_params(Structure):
    _fields_ = [
        ("use_gpu", c_bool),
        ("device", c_void_p),  # ggml_backend_dev_t
        ("print_timings", c_bool),
        ("n_threads", c_int),
        ("image_marker", c_char_p),
        ("media_marker", c_char_p),
        ("flash_attn_type", c_enum),
        ("warmup", c_bool),
        ("image_min_tokens", c_int),
        ("image_max_tokens", c_int),
        ("cb_eval", c_void_p),  # ggml_backend_sched_eval_callback, left NULL
        ("cb_eval_user_data", c_void_p),
        ("batch_max_tokens", c_int32),
        ("progress_callback", c_void_p),  # mtmd_progress_callback, left NULL
        ("progress_callback_user_data", c_void_p),
    ]


class mtmd_decoder_pos(Structure):
    _fields_ = [("t", c_uint32), ("x", c_uint32), ("y", c_uint32), ("z", c_uint32)]


class mtmd_caps(Structure):
    _fields_ = [("inp_vision", c_bool), ("inp_audio", c_bool)]


class mtmd_helper_video_init_params(Structure):
    _fields_ = [("fps_target", c_float), ("ffmpeg_bin_dir", c_char_p), ("timestamp_interval_ms", c_int64)]


class mtmd_helper_init_opt(Structure):
    _fields_ = [("video_params", mtmd_helper_video_init_params)]


class mtmd_helper_bitmap_wrapper(Structure):
    _fields_ = [("bitmap", mtmd_bitmap_p), ("video_ctx", c_void_p)]


STRUCTS = [
    mtmd_input_text,
    mtmd_context_params,
    mtmd_decoder_pos,
    mtmd_caps,
    mtmd_helper_video_init_params,
    mtmd_helper_init_opt,
    mtmd_helper_bitmap_wrapper,
]

_declared = Declarations(lambda: _load())
_c = _declared.c
FUNCTIONS = _declared.functions
__getattr__ = _declared.module_getattr(globals())


_c("const char * mtmd_default_marker(void)", c_char_p)
_c("struct mtmd_context_params mtmd_context_params_default(void)", mtmd_context_params)
_c(
    "mtmd_context * mtmd_init_from_file(const char * mmproj_fname, const struct llama_model * text_model, "
    "const struct mtmd_context_params ctx_params)",
    mtmd_context_p,
    c_char_p,
    c_void_p,
    mtmd_context_params,
)
_c("void mtmd_free(mtmd_context * ctx)", None, mtmd_context_p)
_c(
    "bool mtmd_decode_use_non_causal(const mtmd_context * ctx, const mtmd_input_chunk * chunk)",
    c_bool,
    mtmd_context_p,
    mtmd_input_chunk_p,
)
_c("bool mtmd_decode_use_mrope(const mtmd_context * ctx)", c_bool, mtmd_context_p)
_c("bool mtmd_support_vision(const mtmd_context * ctx)", c_bool, mtmd_context_p)
_c("bool mtmd_support_audio(const mtmd_context * ctx)", c_bool, mtmd_context_p)
_c("int mtmd_get_audio_sample_rate(const mtmd_context * ctx)", c_int, mtmd_context_p)
_c("const char * mtmd_get_marker(const mtmd_context * ctx)", c_char_p, mtmd_context_p)

_c("uint32_t mtmd_bitmap_get_nx(const mtmd_bitmap * bitmap)", c_uint32, mtmd_bitmap_p)
_c("uint32_t mtmd_bitmap_get_ny(const mtmd_bitmap * bitmap)", c_uint32, mtmd_bitmap_p)
_c("size_t mtmd_bitmap_get_n_bytes(const mtmd_bitmap * bitmap)", c_size_t, mtmd_bitmap_p)
_c("bool mtmd_bitmap_is_audio(const mtmd_bitmap * bitmap)", c_bool, mtmd_bitmap_p)
_c("void mtmd_bitmap_free(mtmd_bitmap * bitmap)", None, mtmd_bitmap_p)
_c("const char * mtmd_bitmap_get_id(const mtmd_bitmap * bitmap)", c_char_p, mtmd_bitmap_p)
_c("void mtmd_bitmap_set_id(mtmd_bitmap * bitmap, const char * id)", None, mtmd_bitmap_p, c_char_p)

_c("mtmd_input_chunks * mtmd_input_chunks_init(void)", mtmd_input_chunks_p)
_c("size_t mtmd_input_chunks_size(const mtmd_input_chunks * chunks)", c_size_t, mtmd_input_chunks_p)
_c(
    "const mtmd_input_chunk * mtmd_input_chunks_get(const mtmd_input_chunks * chunks, size_t idx)",
    mtmd_input_chunk_p,
    mtmd_input_chunks_p,
    c_size_t,
)
_c("void mtmd_input_chunks_free(mtmd_input_chunks * chunks)", None, mtmd_input_chunks_p)
_c("enum mtmd_input_chunk_type mtmd_input_chunk_get_type(const mtmd_input_chunk * chunk)", c_enum, mtmd_input_chunk_p)
_c(
    "const llama_token * mtmd_input_chunk_get_tokens_text(const mtmd_input_chunk * chunk, size_t * n_tokens_output)",
    POINTER(_llama.llama_token),
    mtmd_input_chunk_p,
    POINTER(c_size_t),
)
_c("size_t mtmd_input_chunk_get_n_tokens(const mtmd_input_chunk * chunk)", c_size_t, mtmd_input_chunk_p)
_c("const char * mtmd_input_chunk_get_id(const mtmd_input_chunk * chunk)", c_char_p, mtmd_input_chunk_p)
_c("llama_pos mtmd_input_chunk_get_n_pos(const mtmd_input_chunk * chunk)", _llama.llama_pos, mtmd_input_chunk_p)
_c(
    "const mtmd_image_tokens * mtmd_input_chunk_get_tokens_image(const mtmd_input_chunk * chunk)",
    mtmd_image_tokens_p,
    mtmd_input_chunk_p,
)
_c(
    "struct mtmd_decoder_pos mtmd_image_tokens_get_decoder_pos(const mtmd_image_tokens * image_tokens, "
    "llama_pos pos_0, size_t i)",
    mtmd_decoder_pos,
    mtmd_image_tokens_p,
    _llama.llama_pos,
    c_size_t,
)
_c("mtmd_input_chunk * mtmd_input_chunk_copy(const mtmd_input_chunk * chunk)", mtmd_input_chunk_p, mtmd_input_chunk_p)
_c("void mtmd_input_chunk_free(mtmd_input_chunk * chunk)", None, mtmd_input_chunk_p)
_c(
    "int32_t mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output, const mtmd_input_text * text, "
    "const mtmd_bitmap * const * bitmaps, size_t n_bitmaps)",
    c_int32,
    mtmd_context_p,
    mtmd_input_chunks_p,
    POINTER(mtmd_input_text),
    POINTER(mtmd_bitmap_p),
    c_size_t,
)
_c("int32_t mtmd_encode_chunk(mtmd_context * ctx, const mtmd_input_chunk * chunk)", c_int32, mtmd_context_p, c_void_p)
_c("float * mtmd_get_output_embd(mtmd_context * ctx)", POINTER(c_float), mtmd_context_p)
_c("void mtmd_log_set(ggml_log_callback log_callback, void * user_data)", None, _llama.ggml_log_callback, c_void_p)
_c("struct mtmd_caps mtmd_get_cap_from_file(const char * mmproj_fname)", mtmd_caps, c_char_p)

_c("struct mtmd_helper_init_opt mtmd_helper_init_opt_default(void)", mtmd_helper_init_opt)
_c(
    "struct mtmd_helper_bitmap_wrapper mtmd_helper_bitmap_init_from_buf(const mtmd_context * ctx, "
    "const unsigned char * buf, size_t len, bool placeholder, struct mtmd_helper_init_opt opt)",
    mtmd_helper_bitmap_wrapper,
    mtmd_context_p,
    c_char_p,
    c_size_t,
    c_bool,
    mtmd_helper_init_opt,
)
_c(
    "int32_t mtmd_helper_eval_chunks(mtmd_context * ctx, struct llama_context * lctx, "
    "const mtmd_input_chunks * chunks, llama_pos n_past, llama_seq_id seq_id, int32_t n_batch, bool logits_last, "
    "llama_pos * new_n_past)",
    c_int32,
    mtmd_context_p,
    c_void_p,
    mtmd_input_chunks_p,
    _llama.llama_pos,
    _llama.llama_seq_id,
    c_int32,
    c_bool,
    POINTER(_llama.llama_pos),
)
_c(
    "void mtmd_helper_log_set(ggml_log_callback log_callback, void * user_data)",
    None,
    _llama.ggml_log_callback,
    c_void_p,
)

_LIB_NAMES = ("libmtmd.so", "libmtmd.dylib", "mtmd.dll")


def available() -> bool:
    """Whether libmtmd was built into the library folder (a text-only build has none)."""
    return any((_llama.lib_dir() / name).exists() for name in _LIB_NAMES)


def _load() -> ctypes.CDLL:
    _llama.lib  # noqa: B018 (binds libllama first: libmtmd links it)
    for name in _LIB_NAMES:
        path = _llama.lib_dir() / name
        if path.exists():
            return ctypes.CDLL(str(path))
    raise LibraryNotFoundError(
        f"libmtmd not found in {_llama.lib_dir()}: `make build` builds it beside libllama (images and audio need it)"
    )
