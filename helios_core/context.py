"""Context: owner of a llama_context, its KV memory, decode and logits views."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np

from helios_core import _llama
from helios_core.batch import Batch
from helios_core.errors import ClosedError, ContextError, ContextFullError, DecodeError
from helios_core.handle import Handle
from helios_core.model import Model

_FLASH_ATTN = {
    "auto": _llama.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": _llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": _llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


# Row views logits() keeps for reuse, at most (one per output row of recent decodes).
_MAX_VIEWS = 64


@dataclass(frozen=True)
class PerfCounters:
    """llama.cpp's own timings since the context was created or last reset (ms, tokens).

    llama.cpp reports each count as at least 1, and files a one-token decode
    under eval and anything longer under prompt. For exact token arithmetic
    use Context.tokens_decoded.
    """

    prompt_ms: float
    prompt_tokens: int
    eval_ms: float
    eval_tokens: int
    graphs_reused: int


class Context:
    """A llama_context over a Model: KV memory for up to n_seq_max sequences.

    n_ctx: KV cells in tokens, over all sequences (0 = model's training length). Each
        sequence has its own stream of n_ctx / n_seq_max cells (`n_ctx_seq`), as in
        llama.cpp's default, unless kv_unified.
    n_batch: most tokens one decode may take; n_ubatch: tokens per compute pass.
    n_threads / n_threads_batch: CPU threads for one-token steps / prompt chunks
        (default: every core).
    swa_full: keep a full-size cache for sliding-window layers. Without it a
        model like Gemma 3 forgets tokens older than its window, and a cached
        prefix can no longer be trusted for reuse (see llama_memory_seq_pos_min).
    flash_attn: "auto", "on" or "off".
    kv_unified: one stream of n_ctx cells shared by all sequences, each free to fill it.
        Not the default: there llama.cpp gives the cells a sliding-window layer no longer
        attends to (Gemma 3's, beyond 512 tokens back) to other sequences' tokens, so a
        sequence keeps its tokens but loses part of their KV and its prefix cannot be reused.
    embeddings: compute pooled embeddings (embeddings.py) instead of only logits:
        every token of a decode is then an output, and `pooling` (a
        LLAMA_POOLING_TYPE_*; default: the model's own) pools each sequence.

    One thread at a time: llama.cpp contexts are not thread-safe. close()
    alone may come from any thread (see handle.py). Closing the model closes
    its contexts.
    """

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_seq_max: int = 1,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        swa_full: bool = True,
        flash_attn: str = "auto",
        kv_unified: bool = False,
        embeddings: bool = False,
        pooling: int = _llama.LLAMA_POOLING_TYPE_UNSPECIFIED,
    ):
        if model.vocab_only:
            raise ContextError(f"{model.path.name} was loaded with vocab_only=True; a context needs its weights")
        if flash_attn not in _FLASH_ATTN:
            raise ValueError(f"flash_attn must be one of {sorted(_FLASH_ATTN)}, got {flash_attn!r}")
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch), ("n_seq_max", n_seq_max)):
            if value < (0 if name == "n_ctx" else 1):
                raise ValueError(f"{name} must be positive, got {value}")
        cpus = os.cpu_count() or 1
        params = _llama.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_ubatch, n_batch)
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads or cpus
        params.n_threads_batch = n_threads_batch or n_threads or cpus
        params.swa_full = swa_full
        params.kv_unified = kv_unified
        params.flash_attn_type = _FLASH_ATTN[flash_attn]
        params.no_perf = False
        params.embeddings = embeddings
        params.pooling_type = pooling

        model_handle = model.handle()
        ptr = _llama.llama_init_from_model(model_handle.ptr, params)
        if not ptr:
            raise ContextError(
                f"llama.cpp could not create a context (n_ctx={n_ctx}, n_batch={n_batch}, "
                f"n_seq_max={n_seq_max}); the `helios.llama` logger has its reason"
            )
        self.model = model
        self._handle: Handle | None = Handle(ptr, _llama.llama_free, model_handle)  # freed before its model
        model.adopt(self)
        self._memory = _llama.llama_get_memory(ptr)
        self.n_ctx: int = _llama.llama_n_ctx(ptr)
        self.n_ctx_seq: int = _llama.llama_n_ctx_seq(ptr)
        self.n_batch: int = _llama.llama_n_batch(ptr)
        self.n_ubatch: int = _llama.llama_n_ubatch(ptr)
        self.n_seq_max: int = _llama.llama_n_seq_max(ptr)
        self.n_vocab: int = model.vocab.n_vocab
        self.pooling: int = _llama.llama_pooling_type(ptr)  # LLAMA_POOLING_TYPE_NONE unless embeddings pool
        self._row_type = ctypes.c_float * self.n_vocab
        self._views: dict[int, np.ndarray] = {}  # logits(): a view per row address, made once
        # Tokens llama_decode accepted since creation: what KV reuse saves is counted here.
        self.tokens_decoded = 0
        self.n_outputs = 0  # logits rows the last decode produced
        # The LoRA adapter set every decode applies, and its adapters' handles (held while set): lora.apply.
        self.lora: tuple = ()
        self.lora_handles: tuple = ()

    # --- lifetime ----------------------------------------------------------

    def handle(self) -> Handle:
        """The live handle (hold it across a C call); raises ClosedError once closed."""
        handle = self._handle
        if handle is None:
            raise ClosedError("context is closed")
        return handle

    @property
    def ptr(self) -> int:
        return self.handle().ptr

    def close(self) -> None:
        """Release the context and its KV memory. Safe to call twice, from any thread.

        A decode running on another thread finishes first, and the memory of
        a logits view stays readable while the view lives.
        """
        self._handle = None
        self._views = {}  # the views kept for reuse would keep the context alive

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- decode and logits -------------------------------------------------

    def decode(self, batch: Batch) -> None:
        """Run the model over a batch. Rows with a logits flag get an output row.

        Raises DecodeError for an invalid batch and ContextFullError when the
        KV cache has no room; llama.cpp restores its memory in both cases.
        """
        handle = self.handle()  # raises once closed; held until llama_decode returns
        n = batch.n_tokens
        if n == 0:
            raise DecodeError("cannot decode an empty batch", -1)
        if n > self.n_batch:
            raise DecodeError(f"batch of {n} tokens exceeds n_batch={self.n_batch}; decode it in chunks", -1)
        # llama.cpp aborts the process on some invalid batches: check them here.
        # (Scalar reads for the one-token decode step: six NumPy reductions cost 25 us.)
        if n == 1:
            low_token = high_token = batch.token.item(0)
            low_seq = high_seq = batch.seq_id.item(0)
            low_pos = high_pos = batch.pos.item(0)
        else:
            tokens, seqs, positions = batch.token[:n], batch.seq_id[:n, 0], batch.pos[:n]
            low_token, high_token = int(tokens.min()), int(tokens.max())
            low_seq, high_seq = int(seqs.min()), int(seqs.max())
            low_pos, high_pos = int(positions.min()), int(positions.max())
        if low_token < 0 or high_token >= self.n_vocab:
            raise DecodeError(f"token ids must lie in [0, {self.n_vocab}); got {low_token}..{high_token}", -1)
        if low_seq < 0 or high_seq >= self.n_seq_max:
            raise DecodeError(f"seq_id must lie in [0, {self.n_seq_max}); got {low_seq}..{high_seq}", -1)
        if low_pos < 0 or high_pos >= self.n_ctx_seq:
            raise ContextFullError(
                f"position {high_pos} is beyond the context of {self.n_ctx_seq} tokens per sequence", 1
            )
        self.n_outputs = 0
        code = _llama.llama_decode(handle.ptr, batch.c)
        if code == 0:
            self.tokens_decoded += n
            self.n_outputs = batch.logits.item(0) if n == 1 else int(np.count_nonzero(batch.logits[:n]))
            return
        if code == 1:
            raise ContextFullError(f"no room in the KV cache for {n} tokens (n_ctx={self.n_ctx})", code)
        if code == 2:
            raise DecodeError("decode was aborted", code)
        if code == -1:
            raise DecodeError("llama.cpp rejected the batch as invalid (see the `helios.llama` log)", code)
        raise DecodeError(f"llama_decode failed with code {code}", code)

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of batch row `i` (negative counts from the last output) as float32 (n_vocab,).

        A read-only NumPy view of llama.cpp's own buffer, not a copy: it is
        valid until the next decode on this context, which overwrites it (or
        moves it, when a batch asks for more output rows than any before).
        Copy it (`.copy()`) to keep it longer. close() does not free it under
        a live view.
        """
        handle = self.handle()
        address = _llama.llama_get_logits_ith(handle.ptr, i)
        if not address:
            raise DecodeError(f"no logits for batch row {i}: it was not marked for output in the last decode", -1)
        # The same address is the same memory: reuse its view (a ctypes array and a NumPy view
        # cost ~30 us a token). A moved buffer gives new addresses, and new views.
        view = self._views.get(address)
        if view is None:
            if len(self._views) >= _MAX_VIEWS:
                self._views.clear()
            row = self._row_type.from_address(address)
            row.context_handle = handle  # the view's base: keeps the context's memory alive
            view = self._views[address] = np.frombuffer(row, dtype=np.float32)
            view.flags.writeable = False
        return view

    def output_logits(self) -> np.ndarray:
        """Every output row of the last decode as one read-only float32 (n_outputs, n_vocab) view.

        Row k belongs to the k-th token the batch flagged for logits, in batch
        order. Valid like logits(): until the next decode.
        """
        handle = self.handle()
        n_outputs = self.n_outputs
        if n_outputs == 0:
            raise DecodeError("the last decode flagged no token for logits", -1)
        ptr = _llama.llama_get_logits(handle.ptr)
        if not ptr:
            raise DecodeError("the last decode produced no logits", -1)
        rows = (self._row_type * n_outputs).from_address(ctypes.addressof(ptr.contents))
        rows.context_handle = handle  # as in logits(): the view keeps the context's memory alive
        view = np.frombuffer(rows, dtype=np.float32).reshape(n_outputs, self.n_vocab)
        view.flags.writeable = False
        return view

    def sequence_embedding(self, seq_id: int) -> np.ndarray:
        """The pooled embedding of a sequence of the last decode, as a float32 (n_embd_out,) copy (not normalised).

        Only in a context made with embeddings=True and pooling; a copy, since
        llama.cpp frees these rows at the next decode.
        """
        handle = self.handle()
        ptr = _llama.llama_get_embeddings_seq(handle.ptr, self._seq(seq_id))
        if not ptr:
            raise DecodeError(f"no pooled embedding for sequence {seq_id}: the last decode did not pool it", -1)
        size = int(_llama.llama_model_n_embd_out(self.model.handle().ptr))
        return np.ctypeslib.as_array(ptr, shape=(size,)).copy()

    # --- KV memory ---------------------------------------------------------

    # Each method holds the context's handle (`_`) until llama.cpp returns.

    def memory_clear(self) -> None:
        _ = self.handle()
        _llama.llama_memory_clear(self._memory, True)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of a sequence (-1 = open end). False if a partial removal is impossible."""
        _ = self.handle()
        return bool(_llama.llama_memory_seq_rm(self._memory, self._seq(seq_id, all_allowed=True), p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        _ = self.handle()
        _llama.llama_memory_seq_cp(self._memory, self._seq(src), self._seq(dst), p0, p1)

    def seq_keep(self, seq_id: int) -> None:
        _ = self.handle()
        _llama.llama_memory_seq_keep(self._memory, self._seq(seq_id))

    def seq_pos_min(self, seq_id: int) -> int:
        """Smallest position held for a sequence, -1 if empty (above 0 once a SWA cache forgot)."""
        _ = self.handle()
        return int(_llama.llama_memory_seq_pos_min(self._memory, self._seq(seq_id)))

    def seq_pos_max(self, seq_id: int) -> int:
        """Largest position held for a sequence, -1 if empty."""
        _ = self.handle()
        return int(_llama.llama_memory_seq_pos_max(self._memory, self._seq(seq_id)))

    def seq_state(self, seq_id: int) -> bytearray:
        """A copy of one sequence's KV state (llama_state_seq_get_data): bytes for seq_state_set later."""
        handle = self.handle()
        size = _llama.llama_state_seq_get_size(handle.ptr, self._seq(seq_id))
        data = bytearray(size)
        if size and _llama.llama_state_seq_get_data(handle.ptr, _bytes(data), size, seq_id) != size:
            raise ContextError(f"llama.cpp could not copy the state of sequence {seq_id}")
        return data

    def seq_state_set(self, seq_id: int, data: bytearray) -> bool:
        """Load a state from seq_state() into a sequence (emptied first); False when it does not fit or load.

        The sequence is left empty on failure.
        """
        handle = self.handle()
        _llama.llama_memory_seq_rm(self._memory, self._seq(seq_id), -1, -1)
        if _llama.llama_state_seq_set_data(handle.ptr, _bytes(data), len(data), seq_id) == 0:
            _llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            return False
        return True

    def _seq(self, seq_id: int, *, all_allowed: bool = False) -> int:
        # llama.cpp aborts the process on an out-of-range sequence id.
        if not (-1 if all_allowed else 0) <= seq_id < self.n_seq_max:
            raise ContextError(f"seq_id must lie in [0, {self.n_seq_max}); got {seq_id}")
        return seq_id

    # --- perf --------------------------------------------------------------

    def perf(self) -> PerfCounters:
        handle = self.handle()
        # llama.cpp folds a decode into its counters only when it synchronizes.
        _llama.llama_synchronize(handle.ptr)
        data = _llama.llama_perf_context(handle.ptr)
        return PerfCounters(data.t_p_eval_ms, data.n_p_eval, data.t_eval_ms, data.n_eval, data.n_reused)

    def perf_reset(self) -> None:
        handle = self.handle()
        _llama.llama_perf_context_reset(handle.ptr)


def _bytes(data: bytearray):
    """A uint8_t * over a bytearray's own memory (no copy)."""
    return (ctypes.c_uint8 * len(data)).from_buffer(data)
