"""MediaPrompt: a prompt of text-token runs and media chunks, as the engine reads it.

libmtmd splits a prompt text, with one marker per image or audio item, into chunks:
runs of text tokens, and media chunks of n embeddings each. A MediaPrompt is the
list of the prompt's token ids in which each media chunk holds n placeholder ids,
negative (no vocabulary has them) and derived from a hash of the media's bytes. So
everything that compares prompts by their ids (the slots' prefix match, the cached
tokens) needs nothing new: the same image in the next turn matches, another image
does not, and a cached prefix never reuses the KV states of other media.

The engine reads text runs as before and media chunks in steps of their own
(helios_core/media_step.py): `media_at(i)` says which chunk covers token index i.
Indices here are token indices. With M-RoPE models (Qwen2-VL and kin) an image of
n_tokens rows takes n_pos < n_tokens positions, so positions part from indices after
it: helios_core/kvcache.py's Positions maps one to the other, and media_step.py
records each M-RoPE chunk there as it reads it.
"""

from __future__ import annotations

import bisect
import ctypes
import hashlib
from dataclasses import dataclass

import numpy as np

from helios_core import _mtmd
from helios_core.handle import Handle
from helios_core.projector import MediaError, Projector

# The token SequenceState sees in place of a media placeholder: samplers and penalties index
# logits rows by token id, and a negative one would wrap around to the vocabulary's end.
SAMPLING_STAND_IN = 0


@dataclass
class MediaChunk:
    """One media chunk of a prompt: start, n_tokens (rows), and what decoding it needs."""

    start: int
    n_tokens: int
    chunk: Handle  # an mtmd_input_chunk of our own (a copy), freed with this Handle
    non_causal: bool
    kind: str  # "image" or "audio"
    n_pos: int  # positions it takes in the sequence: n_tokens, or fewer with M-RoPE
    mrope: bool = False  # rows placed with M-RoPE (four positions each), and cut only whole
    embeddings: np.ndarray | None = None  # (n_tokens, n_embd) once encoded; dropped once decoded

    @property
    def end(self) -> int:
        return self.start + self.n_tokens


class MediaPrompt(list):
    """A prompt's token ids (media as placeholder ids), and its media chunks by start position."""

    projector: Projector
    chunks: list[MediaChunk]
    _starts: list[int]

    def media_at(self, index: int) -> MediaChunk | None:
        """The media chunk covering token `index`, or None when it is a text token."""
        i = bisect.bisect_right(self._starts, index) - 1
        if i >= 0 and index < self.chunks[i].end:
            return self.chunks[i]
        return None

    def text_ahead(self, index: int) -> int:
        """How many text tokens from `index` come before the next media chunk (to the end when none follows)."""
        if self.media_at(index) is not None:  # inside a chunk read in pieces
            return 0
        i = bisect.bisect_left(self._starts, index)
        return (self.chunks[i].start if i < len(self.chunks) else len(self)) - index

    def sampling_prompt(self) -> list[int]:
        """The ids a sampler's history holds: the placeholders stand-in tokens."""
        ids = np.asarray(self, dtype=np.int64)
        return np.where(ids < 0, SAMPLING_STAND_IN, ids).tolist()

    @property
    def media_tokens(self) -> int:
        return sum(chunk.n_tokens for chunk in self.chunks)


def build(projector: Projector, text: str, media: list[bytes], *, n_ubatch: int) -> MediaPrompt:
    """The prompt of `text` (one projector.marker per item, in order) and the items' bytes.

    Raises MediaError for bytes libmtmd cannot decode, a marker count that does not match, a
    prompt that ends in media (its last token's logits choose the first output), or a media
    chunk that must be read in one pass (non-causal) but is longer than n_ubatch.
    """
    bitmaps = []
    for i, data in enumerate(media):
        try:
            bitmaps.append(projector.bitmap(data))
        except MediaError as error:
            error.item = i
            raise
    chunks = projector.tokenize(text, bitmaps)
    prompt = MediaPrompt()
    prompt.projector = projector
    prompt.chunks = []
    seen: dict[str, int] = {}
    n_chunks = _mtmd.mtmd_input_chunks_size(chunks.ptr)
    for i in range(n_chunks):
        chunk = _mtmd.mtmd_input_chunks_get(chunks.ptr, i)
        kind = _mtmd.mtmd_input_chunk_get_type(chunk)
        if kind == _mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            tokens = _mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            prompt.extend(tokens[: n.value])
            continue
        n_tokens = int(_mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        media_id = (_mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
        # The bitmap's id is the SHA-256 of its file's bytes (Projector.bitmap sets it); a sliced
        # image gives several chunks of one id, told apart by their order.
        ordinal = seen.get(media_id, 0)
        seen[media_id] = ordinal + 1
        placeholder = _placeholder(f"{media_id}:{ordinal}")
        non_causal = projector.uses_non_causal(chunk)
        if non_causal and n_tokens > n_ubatch:
            raise MediaError(
                f"a media item takes {n_tokens} tokens read in one pass, more than the context's "
                f"n_ubatch of {n_ubatch}; serve with a larger --ubatch"
            )
        owned = Handle(_mtmd.mtmd_input_chunk_copy(chunk), _mtmd.mtmd_input_chunk_free, projector.handle())
        name = "audio" if kind == _mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO else "image"
        n_pos = int(_mtmd.mtmd_input_chunk_get_n_pos(chunk))
        prompt.chunks.append(MediaChunk(len(prompt), n_tokens, owned, non_causal, name, n_pos, projector.mrope))
        prompt.extend([placeholder] * n_tokens)
    if not prompt or prompt[-1] < 0:
        raise MediaError("a prompt must end with text after its last media item")
    prompt._starts = [chunk.start for chunk in prompt.chunks]
    return prompt


def _placeholder(key: str) -> int:
    """A negative id for one media chunk, from its bytes' hash: -1 .. -(2**31 - 1)."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return -1 - digest % (2**31 - 1)
