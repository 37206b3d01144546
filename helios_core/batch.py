"""Batch: a llama_batch whose arrays are NumPy arrays, filled without Python loops.

llama_batch_init mallocs each token's seq_id list separately, which rules
out a 2-D view of sequence ids. So a Batch allocates every array in NumPy
and points a llama_batch struct at them: what NumPy writes is exactly what
llama_decode reads, with no copy in between, and filling a 512-token prompt
chunk is one vectorised assignment per field.
"""

from __future__ import annotations

import ctypes

import numpy as np

from helios_core import _llama


class Batch:
    """Up to `capacity` tokens, each in up to `n_seq_max` sequences at once (usually 1).

    n_seq_max bounds how many sequence ids one token carries, as in
    llama_batch_init; the sequence ids themselves may be anything the
    context's own n_seq_max allows.

    Fill with `set(...)` (or `add(...)`), then pass to `Context.decode`.
    The arrays `token`, `pos`, `n_seq_id`, `seq_id` (capacity x n_seq_max)
    and `logits` (int8 output flags) are the memory llama.cpp reads.
    """

    def __init__(self, capacity: int, n_seq_max: int = 1):
        if capacity < 1 or n_seq_max < 1:
            raise ValueError(f"a batch needs capacity >= 1 and n_seq_max >= 1, got {capacity}, {n_seq_max}")
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_id = np.zeros((capacity, n_seq_max), dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        # One pointer per token row of seq_id, as llama_batch expects (int32 **).
        row_bytes = self.seq_id.strides[0]
        base = self.seq_id.ctypes.data
        self._seq_rows = (ctypes.POINTER(_llama.llama_seq_id) * capacity)(
            *(ctypes.cast(base + i * row_bytes, ctypes.POINTER(_llama.llama_seq_id)) for i in range(capacity))
        )
        self.c = _llama.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(ctypes.POINTER(_llama.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(_llama.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_rows,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    @property
    def n_tokens(self) -> int:
        return self.c.n_tokens

    def clear(self) -> None:
        self.c.n_tokens = 0

    def add(self, tokens, start_pos: int, seq_id: int = 0, *, logits_last: bool = False) -> slice:
        """Append a run of tokens of one sequence at positions start_pos, start_pos+1, ...

        Returns the slice of batch rows they occupy (row i's logits, when
        requested, are read with `Context.logits(i)`).
        """
        n = len(tokens)
        start = self.c.n_tokens
        end = start + n
        if end > self.capacity:
            raise ValueError(f"batch overflow: {end} tokens, capacity {self.capacity}")
        if seq_id < 0:
            raise ValueError(f"seq_id must be >= 0, got {seq_id}")  # the upper bound is the context's to check
        if n == 1:  # the decode step of a generating sequence: element writes, no temporaries
            self.token[start] = tokens[0]
            self.pos[start] = start_pos
            self.n_seq_id[start] = 1
            self.seq_id[start, 0] = seq_id
            self.logits[start] = logits_last
        else:
            self.token[start:end] = tokens
            self.pos[start:end] = np.arange(start_pos, start_pos + n, dtype=np.int32)
            self.n_seq_id[start:end] = 1
            self.seq_id[start:end, 0] = seq_id
            self.logits[start:end] = 0
            if logits_last and n:
                self.logits[end - 1] = 1
        self.c.n_tokens = end
        return slice(start, end)

    def set_one(self, token: int, pos: int, seq_id: int = 0) -> None:
        """Replace the contents with one token that wants logits (the decode-step case)."""
        self.token[0] = token
        self.pos[0] = pos
        self.n_seq_id[0] = 1
        self.seq_id[0, 0] = seq_id
        self.logits[0] = 1
        self.c.n_tokens = 1

    def set(self, tokens, start_pos: int = 0, seq_id: int = 0, *, logits_last: bool = True) -> None:
        """Replace the contents with one run of tokens (the usual prompt-chunk case)."""
        self.clear()
        self.add(tokens, start_pos, seq_id, logits_last=logits_last)
