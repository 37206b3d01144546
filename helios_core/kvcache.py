"""Which tokens a llama sequence holds, and how much of a new prompt it can reuse."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helios_core.context import Context


class CachedSequence:
    """The tokens held in one llama sequence's KV memory, positions 0..len-1.

    `lora` is the adapter set (helios_core.lora) they were decoded under: their KV states
    are another model's under any other set, so a prompt asking for another set reuses nothing.
    """

    def __init__(self, seq_id: int = 0):
        self.seq_id = seq_id
        self.tokens: list[int] = []
        self.lora: tuple = ()

    def common_prefix(self, prompt: Sequence[int], lora: tuple = ()) -> int:
        """Length of the longest common prefix of the cached tokens and `prompt`, read under adapter set `lora`."""
        n = min(len(self.tokens), len(prompt))
        if n == 0 or lora != self.lora:
            return 0
        a = np.asarray(self.tokens[:n], dtype=np.int32)
        b = np.asarray(prompt[:n], dtype=np.int32)
        diff = np.flatnonzero(a != b)
        return int(diff[0]) if diff.size else n

    def reuse(self, ctx: Context, prompt: Sequence[int], lora: tuple = ()) -> int:
        """Drop the stale tail from the KV memory; return how many prompt tokens stay cached.

        `lora`: the adapter set the prompt is read under; the sequence holds tokens of that set from now on.

        At least the last prompt token is always left to decode, since its
        logits are what the first sampled token needs. A sliding-window cache
        that has already forgotten part of the prefix cannot be reused.
        """
        keep = min(self.common_prefix(prompt, lora), len(prompt) - 1)
        self.lora = lora
        if keep > 0:
            window = ctx.model.n_swa
            pos_min = ctx.seq_pos_min(self.seq_id)
            if window and pos_min > max(0, keep - window):
                keep = 0
        if keep < len(self.tokens) and not ctx.seq_rm(self.seq_id, keep, -1):
            keep = 0  # this memory cannot cut a sequence short (recurrent models)
        if keep == 0:
            ctx.seq_rm(self.seq_id, -1, -1)
        del self.tokens[keep:]
        return keep

    def forget(self, ctx: Context) -> None:
        ctx.seq_rm(self.seq_id, -1, -1)
        self.tokens.clear()
