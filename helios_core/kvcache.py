"""Which tokens a llama sequence holds, where they sit, and how much of a new prompt it can reuse.

The engine indexes a sequence's tokens (media rows count one each); llama.cpp's KV memory
keys them by position. The two are equal except after media placed with M-RoPE (Qwen2-VL
and its kin): an image of n_tokens rows takes only n_pos positions (max(w, h) of its token
grid; every row has its first row's temporal position), so the token after it sits at
start + n_pos. `Positions` records those chunks and answers pos(index); cuts land on a
chunk's start, never inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helios_core.context import Context


@dataclass(frozen=True)
class Span:
    """A media chunk placed with M-RoPE: token indices start..start+n_tokens-1, taking n_pos positions."""

    start: int
    n_tokens: int
    n_pos: int

    @property
    def end(self) -> int:
        return self.start + self.n_tokens


class Positions:
    """Token index -> KV position of one sequence: index less the rows each M-RoPE chunk before it saved."""

    def __init__(self, spans: Sequence[Span] = ()):
        self.spans: list[Span] = list(spans)  # ascending, disjoint

    def add(self, span: Span) -> None:
        """Record a chunk read into the sequence after every recorded one."""
        self.spans.append(span)

    def pos(self, index: int) -> int:
        """The position of token `index` (inside an M-RoPE chunk: the chunk's first position)."""
        shift = 0
        for span in self.spans:  # a handful of media at most: no index needed
            if index < span.end:
                return index - shift if index <= span.start else span.start - shift
            shift += span.n_tokens - span.n_pos
        return index - shift

    def cut(self, index: int) -> int:
        """Where a sequence of `index` tokens may be cut: `index`, or the start of the M-RoPE chunk it falls inside.

        Every row of an M-RoPE image shares its first row's temporal position, so the KV memory
        can drop an image only whole.
        """
        for span in self.spans:
            if span.start < index < span.end:
                return span.start
        return index

    def truncate(self, index: int) -> None:
        """Forget the chunks from token `index` on (a cut point)."""
        self.spans = [span for span in self.spans if span.start < index]


class CachedSequence:
    """The tokens held in one llama sequence's KV memory, and their positions (`positions`).

    `lora` is the adapter set (helios_core.lora) they were decoded under: their KV states
    are another model's under any other set, so a prompt asking for another set reuses nothing.
    """

    def __init__(self, seq_id: int = 0):
        self.seq_id = seq_id
        self.tokens: list[int] = []
        self.lora: tuple = ()
        self.positions = Positions()

    def pos(self, index: int) -> int:
        """The KV position of token `index` (of the tokens held, or of the next ones to be read)."""
        return self.positions.pos(index) if self.positions.spans else index

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
        keep = self.positions.cut(min(self.common_prefix(prompt, lora), len(prompt) - 1))
        self.lora = lora
        if keep > 0:
            window = ctx.model.n_swa
            pos_min = ctx.seq_pos_min(self.seq_id)
            if window and pos_min > max(0, self.pos(keep) - window):
                keep = 0
        if keep < len(self.tokens) and not self.truncate(ctx, keep):
            keep = 0  # this memory cannot cut a sequence short (recurrent models)
        if keep == 0:
            self.forget(ctx)
        return keep

    def truncate(self, ctx: Context, n: int) -> bool:
        """Drop the tokens from index `n` on (from the start of an M-RoPE chunk `n` falls inside) from the KV memory.

        False, with nothing dropped, when this memory cannot cut a sequence short (recurrent models).
        """
        n = self.positions.cut(n)
        if not ctx.seq_rm(self.seq_id, self.pos(n), -1):
            return False
        del self.tokens[n:]
        self.positions.truncate(n)
        return True

    def forget(self, ctx: Context) -> None:
        """Empty the sequence: its record first, so a closed context (which raises) leaves none behind."""
        self.tokens.clear()
        self.positions.spans.clear()
        ctx.seq_rm(self.seq_id, -1, -1)
