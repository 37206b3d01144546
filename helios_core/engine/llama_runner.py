"""LlamaRunner: the Runner over a llama context, the one engine module that touches it.

It fills the ctypes batch from a step's Plan and decodes it, applies the plan's LoRA
adapters, hands out zero-copy views of the output rows, trims and reuses the sequences'
KV memory, saves to and restores from the RAM tier (helios_core.prompt_cache), reads media
pieces (helios_core.media_step) and sets in-graph samplers on sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helios_core import lora, media_step
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.engine.slots import Plan
from helios_core.errors import HeliosError
from helios_core.kvcache import CachedSequence
from helios_core.media_prompt import MediaPrompt
from helios_core.prompt_cache import PromptCache
from helios_core.sampling.backend import BackendChain, BackendSampler


class LlamaRunner:
    """A Context (and a Batch of its n_batch) behind the Runner protocol (runner.py).

    prompt_cache: the RAM tier a sequence's prefix is saved to before it is cut, and restored
        from at admission (None: the slots alone). The runner never frees the context: its owner does.
    """

    def __init__(self, ctx: Context, *, prompt_cache: PromptCache | None = None):
        self.ctx = ctx
        self.prompt_cache = prompt_cache
        self.model = ctx.model
        self.n_vocab = ctx.n_vocab
        self.n_batch = ctx.n_batch
        self.n_ubatch = ctx.n_ubatch
        self.n_seq_max = ctx.n_seq_max
        self.n_ctx_seq = ctx.n_ctx_seq
        self.samples_in_graph = True
        self.batch = Batch(ctx.n_batch)

    @property
    def adapters(self) -> tuple:
        return self.ctx.lora

    # --- a step ---------------------------------------------------------------------------

    def decode(self, plan: Plan) -> None:
        batch = self.batch
        batch.clear()
        for chunk in plan.chunks:
            cache = chunk.slot.cache
            batch.add(chunk.tokens, cache.pos(chunk.pos), cache.seq_id)
            batch.logits[chunk.logits] = 1
        lora.apply(self.ctx, plan.lora)
        self.ctx.decode(batch)

    def logits(self, row: int) -> np.ndarray:
        return self.ctx.logits(row)

    def outputs(self) -> np.ndarray:
        return self.ctx.output_logits()

    # --- the KV memory --------------------------------------------------------------------

    def admit(
        self, free: Sequence[CachedSequence], chosen: CachedSequence, prompt: Sequence[int], adapters: tuple
    ) -> tuple[CachedSequence, int]:
        seq = chosen
        if self.prompt_cache is not None:  # the tier may hold a longer prefix; a long tail is saved first
            seq = self.prompt_cache.admit(self.ctx, free, chosen, prompt, adapters)
        return seq, seq.reuse(self.ctx, prompt, adapters)

    def clear(self, seq: CachedSequence) -> None:
        if self.prompt_cache is not None:
            self.prompt_cache.stash(self.ctx, seq)
        seq.forget(self.ctx)

    def trim(self, seq: CachedSequence, keep: int) -> None:
        seq.truncate(self.ctx, keep)

    def forget(self, seq: CachedSequence) -> None:
        try:
            seq.forget(self.ctx)
        except HeliosError:  # the context is closed: there is nothing left to forget
            pass

    # --- media and in-graph sampling ------------------------------------------------------

    def read_media(
        self, seq: CachedSequence, pos: int, media: MediaPrompt, budget: int, adapters: tuple
    ) -> tuple[int, int]:
        lora.apply(self.ctx, adapters)
        return media_step.read(self.ctx, seq, pos, media, budget)

    def graph_sampler(self, seq_id: int, chain: BackendChain) -> BackendSampler:
        return BackendSampler(self.ctx, seq_id, chain)
