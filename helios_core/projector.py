"""Projector: a multimodal projector (mmproj GGUF) loaded by libmtmd beside its text model.

Owned like a Context: it holds its model's handle, so the model is freed after it, and the
model closes it first (Model.adopt). A call into libmtmd holds the projector's handle in a
local, so close() from another thread never frees it under a call in flight; later use
raises ClosedError.

Decoding, resizing and slicing images and audio are libmtmd's; this object turns bytes
into bitmaps, a marked-up prompt into chunks (helios_core/media_prompt.py), and a media
chunk into its embeddings.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path

import numpy as np

from helios_core import _mtmd, backend
from helios_core.errors import ClosedError, HeliosError, ModelLoadError
from helios_core.handle import Handle
from helios_core.model import Model


class MediaError(HeliosError, ValueError):
    """Bytes libmtmd cannot read as an image or audio, or media this projector does not take.

    item: the index of the media item at fault in its prompt, where one is.
    """

    item: int | None = None


class Projector:
    """A loaded mmproj for `model`. n_threads: encoder threads (default: every CPU).

    Raises ModelLoadError with one line saying why, for a missing file, one that is not an
    mmproj, or one whose output width does not match the model's.

    mrope: the model places media rows with M-RoPE (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): four
    positions a row (`positions`), and fewer positions than rows per image.
    """

    def __init__(self, model: Model, path: str | os.PathLike, *, n_threads: int | None = None, use_gpu: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"projector file not found: {self.path}")
        backend.ensure_initialized()
        _mtmd.mtmd_helper_log_set(backend._callback, None)  # libmtmd's log lines into helios.llama, as llama.cpp's
        params = _mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads or os.cpu_count() or 1
        params.print_timings = False
        params.warmup = False
        # A marker no client can type by accident: the HTTP layer puts it where each media part was.
        self.marker = f"<__helios_media_{os.urandom(6).hex()}__>"
        self._marker = self.marker.encode()
        params.media_marker = self._marker
        model_handle = model.handle()
        with backend.errors_captured() as errors:
            ptr = _mtmd.mtmd_init_from_file(os.fsencode(self.path), model_handle.ptr, params)
        if not ptr:
            reason = errors[-1] if errors else "not a projector GGUF libmtmd can load"
            raise ModelLoadError(f"could not load the projector {self.path}: {reason.strip()}")
        self._handle: Handle | None = Handle(ptr, _mtmd.mtmd_free, model_handle)  # freed before its model
        self.model = model
        model.adopt(self)
        self.vision = bool(_mtmd.mtmd_support_vision(ptr))
        self.audio = bool(_mtmd.mtmd_support_audio(ptr))
        self.audio_sample_rate = int(_mtmd.mtmd_get_audio_sample_rate(ptr)) if self.audio else 0
        self.mrope = bool(_mtmd.mtmd_decode_use_mrope(ptr))

    @property
    def modalities(self) -> list[str]:
        """What this projector reads besides text: "image", "audio"."""
        return [name for name, served in (("image", self.vision), ("audio", self.audio)) if served]

    # --- lifetime ----------------------------------------------------------

    def handle(self) -> Handle:
        handle = self._handle
        if handle is None:
            raise ClosedError(f"projector {self.path.name} is closed")
        return handle

    def close(self) -> None:
        """Release the projector (after any call in flight). Safe to call twice."""
        self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- media -------------------------------------------------------------

    def bitmap(self, data: bytes) -> Handle:
        """An image or audio file's bytes decoded by libmtmd (stb_image, miniaudio) into a bitmap.

        Raises MediaError when libmtmd cannot read them, or reads audio from a projector without an
        audio encoder. The bitmap is freed when the returned Handle is dropped.
        """
        handle = self.handle()
        opt = _mtmd.mtmd_helper_init_opt_default()
        with backend.errors_captured():
            wrapper = _mtmd.mtmd_helper_bitmap_init_from_buf(handle.ptr, data, len(data), False, opt)
        if not wrapper.bitmap:
            raise MediaError("the media could not be decoded (not an image or audio format libmtmd reads)")
        bitmap = Handle(wrapper.bitmap, _mtmd.mtmd_bitmap_free)
        # The id the prefix cache keys this media by (helios_core/media_prompt.py): a hash of its bytes.
        _mtmd.mtmd_bitmap_set_id(wrapper.bitmap, hashlib.sha256(data).hexdigest().encode())
        if _mtmd.mtmd_bitmap_is_audio(wrapper.bitmap) and not self.audio:
            raise MediaError("this model's projector reads no audio")
        if not _mtmd.mtmd_bitmap_is_audio(wrapper.bitmap) and not self.vision:
            raise MediaError("this model's projector reads no images")
        return bitmap

    def tokenize(self, text: str, bitmaps: list[Handle]) -> Handle:
        """Text with one marker per bitmap, as libmtmd's chunks (an mtmd_input_chunks, freed with the Handle)."""
        handle = self.handle()
        chunks = Handle(_mtmd.mtmd_input_chunks_init(), _mtmd.mtmd_input_chunks_free)
        encoded = text.encode()
        text_c = _mtmd.mtmd_input_text(encoded, len(encoded), True, True)
        array = (ctypes.c_void_p * max(1, len(bitmaps)))(*(b.ptr for b in bitmaps))
        with backend.errors_captured() as errors:
            code = _mtmd.mtmd_tokenize(handle.ptr, chunks.ptr, ctypes.byref(text_c), array, len(bitmaps))
        if code != 0:
            reason = errors[-1].strip() if errors else f"mtmd_tokenize returned {code}"
            raise MediaError(f"the prompt's media could not be placed: {reason}")
        return chunks

    def uses_non_causal(self, chunk: int) -> bool:
        """Whether this media chunk's embeddings are decoded with non-causal attention (Gemma 3)."""
        return bool(_mtmd.mtmd_decode_use_non_causal(self.handle().ptr, chunk))

    def positions(self, chunk: int, pos_0: int, rows: range) -> np.ndarray:
        """M-RoPE positions of a media chunk's `rows` when its first row sits at position pos_0.

        int32, section-major as an embeddings llama_batch takes them: four planes of len(rows)
        (temporal, row, column, unused), libmtmd's placement for images; one position a row
        in every plane for audio.
        """
        self.handle()  # raises once closed: the chunk belongs to this projector
        out = np.empty((4, len(rows)), dtype=np.int32)
        image = _mtmd.mtmd_input_chunk_get_tokens_image(chunk)
        if not image:
            out[:] = np.arange(pos_0 + rows.start, pos_0 + rows.stop, dtype=np.int32)
            return out.reshape(-1)
        for j, i in enumerate(rows):
            p = _mtmd.mtmd_image_tokens_get_decoder_pos(image, pos_0, i)
            out[:, j] = (p.t, p.y, p.x, p.z)  # llama.cpp's sections: temporal, height, width
        return out.reshape(-1)

    def encode(self, chunk: int, n_tokens: int) -> np.ndarray:
        """Run the encoder over one media chunk: its embeddings, float32 (n_tokens, model.n_embd_inp), a copy."""
        handle = self.handle()
        with backend.errors_captured() as errors:
            code = _mtmd.mtmd_encode_chunk(handle.ptr, chunk)
        if code != 0:
            raise MediaError(f"encoding the media failed ({errors[-1].strip() if errors else code})")
        out = _mtmd.mtmd_get_output_embd(handle.ptr)
        n_embd = self.model.n_embd_inp  # Qwen3-VL's rows carry its deepstack layers' inputs too
        return np.ctypeslib.as_array(out, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()
