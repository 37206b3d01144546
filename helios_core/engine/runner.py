"""The Runner: what the scheduler asks of the model and its KV memory, and nothing more.

The scheduler (scheduler.py) and the commit (commit.py) decide; a Runner does. It decodes a
step's Plan, hands out the logits rows of the last decode, trims and reuses sequences' KV
memory (and the RAM tier behind it), reads media pieces, and sets up in-graph samplers.
llama_runner.LlamaRunner is the one over a llama context; tests/scripted_runner.py's
ScriptedRunner answers from a rule over the tokens each sequence holds, with no weights,
so the scheduler is tested on its own.

This module holds the protocol only, so that the scheduler can name it without importing
ctypes, a Context or a Batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # names for the annotations only; nothing here runs them
    from helios_core.engine.slots import Plan
    from helios_core.kvcache import CachedSequence
    from helios_core.media_prompt import MediaPrompt
    from helios_core.model import Model
    from helios_core.sampling.backend import BackendChain


class GraphSampler(Protocol):
    """A sampler chain drawing inside the compute graph for one sequence (sampling.backend.BackendSampler)."""

    def token(self, row: int) -> int:
        """The token the last decode drew for batch row `row`."""

    def close(self) -> None:
        """Take the chain off its sequence; safe to call twice."""


class Runner(Protocol):
    """The model and KV memory behind a Scheduler. One thread calls it: the scheduler's.

    Positions and lengths are in tokens; a row is a batch row of the last decode; a view
    returned by logits() or outputs() is valid until the next decode.
    """

    model: Model  # its vocabulary detokenizes; nothing here decodes with it directly
    n_vocab: int
    n_batch: int  # tokens one decode takes at most
    n_seq_max: int  # sequences, one per slot
    n_ctx_seq: int  # positions per sequence
    samples_in_graph: bool  # graph_sampler() can work here

    @property
    def adapters(self) -> tuple:
        """The LoRA adapter set (lora.AdapterSet) decodes apply now: planning it first spares a switch."""

    def decode(self, plan: Plan) -> None:
        """Decode every chunk of `plan` in one batch, under plan.lora. Raises HeliosError; the memory is then
        as it was before the call."""

    def logits(self, row: int) -> np.ndarray:
        """The logits of batch row `row` of the last decode: float32 (n_vocab,), read-only."""

    def outputs(self) -> np.ndarray:
        """Every output row of the last decode, in batch order: float32 (n_outputs, n_vocab), read-only."""

    def admit(
        self, free: Sequence[CachedSequence], chosen: CachedSequence, prompt: Sequence[int], adapters: tuple
    ) -> tuple[CachedSequence, int]:
        """The free sequence `prompt` is read into (`chosen`, or one the RAM tier restores a longer prefix
        into) and how many of its first tokens are cached there; the rest of the sequence is cut."""

    def clear(self, seq: CachedSequence) -> None:
        """Empty a sequence for a request that reuses nothing, saving what it held to the RAM tier first."""

    def trim(self, seq: CachedSequence, keep: int) -> None:
        """Cut a sequence's memory and tokens to its first `keep` tokens (an M-RoPE image is cut whole)."""

    def forget(self, seq: CachedSequence) -> None:
        """Empty a sequence whose memory is unknown (a failed decode); never raises, even once closed."""

    def read_media(
        self, seq: CachedSequence, pos: int, media: MediaPrompt, budget: int, adapters: tuple
    ) -> tuple[int, int]:
        """One bounded piece of the media chunk at `pos` under adapter set `adapters` (media_step.read)."""

    def graph_sampler(self, seq_id: int, chain: BackendChain) -> GraphSampler:
        """Set `chain` on a sequence, to draw in the graph from the next decode. Raises HeliosError if refused."""
