"""Slots and the plan of one step: which slot puts which tokens into the batch, and what its rows are for."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from helios_core.engine.request import Request
from helios_core.engine.runner import GraphSampler
from helios_core.kvcache import CachedSequence
from helios_core.speculative import EMPTY, Drafter, SlotAcceptance


@dataclass
class Slot:
    cache: CachedSequence
    request: Request | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to decode
    next_pos: int = 0
    drafter: Drafter | None = None  # with speculation: this slot's drafter, and its request's record of drafts
    acceptance: SlotAcceptance | None = None
    sampler: GraphSampler | None = None  # its request's backend chain, set on its sequence while it runs

    @property
    def busy(self) -> bool:
        return self.request is not None


@dataclass
class Chunk:
    """What one slot puts into a step's batch, and what its rows are for.

    tokens: what it decodes (ints, or an int32 array), at positions pos, pos+1, ...; rows: their rows in the batch.
    logits: the rows whose logits the step outputs (a run within rows; empty for none), and
        outputs: their places among the step's output rows (Runner.outputs()), in batch order.
    prompt: prompt tokens in it (a prompt chunk), else 0.
    samples: the last row's logits choose the slot's next token.
    draft: a verify chunk's drafted tokens (the tokens after the slot's last one);
        every row of such a chunk has logits, row i judging draft[i].
    scored: prompt scoring, (first output row, rows, position of the first row's token).
    """

    slot: Slot
    tokens: np.ndarray | list[int]
    rows: slice
    pos: int
    logits: slice
    outputs: slice
    prompt: int = 0
    samples: bool = False
    draft: np.ndarray = field(default_factory=lambda: EMPTY)
    draft_key: tuple = ()  # the acceptance bucket the draft's verdict is recorded under
    scored: tuple[int, int, int] | None = None

    @property
    def last_row(self) -> int:
        return self.rows.stop - 1

    @property
    def last_output(self) -> int:
        """The output row of the last row, when the step outputs its logits."""
        return self.outputs.stop - 1


@dataclass
class Plan:
    """One step: the chunks of the batch, in batch order, and the batch's rows and output rows so far."""

    chunks: list[Chunk] = field(default_factory=list)
    n_tokens: int = 0
    n_outputs: int = 0
    lora: tuple = ()  # the adapter set (lora.AdapterSet) of every chunk's request: the batch is decoded under it

    def add(self, slot: Slot, tokens, pos: int, first_logit: int, n_logits: int, **fields) -> Chunk:
        """Append a chunk of `tokens` at positions pos.. whose rows first_logit..first_logit+n_logits-1
        (counted within the chunk) output logits; `fields` are the Chunk's others."""
        start, n, out = self.n_tokens, len(tokens), self.n_outputs
        logits = slice(start + first_logit, start + first_logit + n_logits)
        chunk = Chunk(slot, tokens, slice(start, start + n), pos, logits, slice(out, out + n_logits), **fields)
        self.chunks.append(chunk)
        self.n_tokens = start + n
        self.n_outputs = out + n_logits
        return chunk


@dataclass
class SchedulerStats:
    steps: int = 0
    batch_tokens: int = 0  # summed over steps: mean batch size = batch_tokens / steps
    batch_sequences: int = 0  # sequences per step, summed likewise
    busy_seconds: float = 0.0  # wall time spent in steps that decoded
    prompt_tokens_decoded: int = 0
    generated_tokens: int = 0
    reasoning_tokens: int = 0  # of the generated tokens, those of finished requests' reasoning sections
    cache_hits: int = 0  # requests that found part of their prompt cached
    cached_tokens: int = 0
    draft_tokens: int = 0  # speculative decoding: tokens drafted, and how many of them were kept
    draft_accepted: int = 0
    mask_seconds: float = 0.0  # wall time computing constrained slots' masks ahead of their processors


# A shared prefix shorter than this fraction of the prompt or of the slot's
# cache (a lone BOS, a chat header) counts as no match.
MIN_SHARED_FRACTION = 0.1


def slot_score(slot: Slot, prompt: list[int], adapters: tuple = ()) -> tuple[int, int]:
    """The longest common prefix wins; ties (and no real match) go to the slot holding the fewest tokens.

    So a prompt that shares only BOS with a long cache takes an emptier slot
    instead of wiping that cache.
    """
    shared = slot.cache.common_prefix(prompt, adapters)  # nothing under another adapter set
    if shared < MIN_SHARED_FRACTION * max(len(prompt), len(slot.cache.tokens)):
        shared = 0
    return shared, -len(slot.cache.tokens)
