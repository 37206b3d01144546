"""Reading a slot's media chunk: encode it, then decode its embeddings into the slot's sequence.

The scheduler calls `read(ctx, cache, index, prompt, budget)` for each slot whose next
prompt token is in a media chunk (helios_core/media_prompt.py), before it plans the step's
token batch: embeddings and token ids cannot share one llama_batch. Bounded like
prompt reading, so running streams keep flowing: one call either encodes one chunk
(the encoder's whole pass) or decodes at most `budget` of its rows. A chunk read with
non-causal attention (Gemma 3) is decoded in one pass, whole, since its rows attend
to each other.

Rows of an M-RoPE chunk (Qwen2-VL and kin) carry four positions each, libmtmd's placement
from the chunk's first position; the chunk is recorded in the sequence's Positions
(helios_core/kvcache.py) as its first rows are decoded, so the text after it is placed
at start + n_pos.
"""

from __future__ import annotations

import ctypes

import numpy as np

from helios_core import _llama
from helios_core.context import Context
from helios_core.errors import ContextFullError, DecodeError
from helios_core.kvcache import CachedSequence, Span
from helios_core.media_prompt import MediaPrompt


def read(ctx: Context, cache: CachedSequence, index: int, prompt: MediaPrompt, budget: int) -> tuple[int, int]:
    """One bounded piece of the media chunk at token `index`: (rows decoded now, token index to read from next).

    Returns (0, index) after an encode (the rows follow in a later step). A non-causal chunk whose
    first rows are cached but not all (a prefix match that ended inside it) is read again from
    its start: the returned index is then the chunk's start, and the caller drops the rows cached
    after it (CachedSequence.truncate). An M-RoPE chunk needs no such turn: CachedSequence.reuse
    never keeps part of one.
    """
    chunk = prompt.media_at(index)
    assert chunk is not None, f"token {index} is no media"
    if chunk.non_causal and index != chunk.start:
        return 0, chunk.start
    if chunk.embeddings is None:
        chunk.embeddings = prompt.projector.encode(chunk.chunk.ptr, chunk.n_tokens)
        return 0, index
    offset = index - chunk.start
    n = chunk.n_tokens - offset if chunk.non_causal else min(budget, chunk.n_tokens - offset, ctx.n_batch)
    if index + n > ctx.n_ctx_seq:  # each row takes a KV cell, whatever its position
        raise ContextFullError(f"media up to token {index + n} is beyond the context of {ctx.n_ctx_seq}", 1)
    first = cache.pos(chunk.start)
    rows = range(offset, offset + n)
    if chunk.mrope:
        positions = prompt.projector.positions(chunk.chunk.ptr, first, rows)
    else:
        positions = np.arange(first + rows.start, first + rows.stop, dtype=np.int32)
    decode_embeddings(ctx, chunk.embeddings[offset : offset + n], positions, cache.seq_id, non_causal=chunk.non_causal)
    if chunk.mrope and offset == 0:
        cache.positions.add(Span(chunk.start, chunk.n_tokens, chunk.n_pos))
    if offset + n == chunk.n_tokens:
        chunk.embeddings = None  # decoded: the KV memory holds it now
    return n, index + n


def decode_embeddings(ctx: Context, embd: np.ndarray, pos: np.ndarray, seq_id: int, *, non_causal: bool) -> None:
    """Decode rows of embeddings (n, n_embd) of one sequence at positions `pos`, no logits.

    pos: int32, n of them, or 4 n section-major for an M-RoPE model (Projector.positions).
    Raises ContextFullError or DecodeError as Context.decode does; llama.cpp restores its memory.
    """
    n = embd.shape[0]
    embd = np.ascontiguousarray(embd, dtype=np.float32)
    pos = np.ascontiguousarray(pos, dtype=np.int32)
    n_seq_id = np.ones(n, dtype=np.int32)
    seq = ctypes.c_int32(seq_id)
    seq_rows = (ctypes.POINTER(ctypes.c_int32) * n)(*([ctypes.pointer(seq)] * n))
    logits = np.zeros(n, dtype=np.int8)
    batch = _llama.llama_batch(
        n_tokens=n,
        token=None,
        embd=embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        pos=pos.ctypes.data_as(ctypes.POINTER(_llama.llama_pos)),
        n_seq_id=n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
        seq_id=seq_rows,
        logits=logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
    )
    handle = ctx.handle()  # held until llama_decode returns
    if non_causal:
        _llama.llama_set_causal_attn(handle.ptr, False)
    try:
        code = _llama.llama_decode(handle.ptr, batch)
    finally:
        if non_causal:
            _llama.llama_set_causal_attn(handle.ptr, True)
    ctx.n_outputs = 0
    if code == 1:
        raise ContextFullError(f"no room in the KV cache for {n} media tokens (n_ctx={ctx.n_ctx})", code)
    if code != 0:
        raise DecodeError(f"llama_decode of media embeddings failed with code {code}", code)
    ctx.tokens_decoded += n
