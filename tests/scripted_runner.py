"""A Runner without weights, for testing the scheduler's admission, plan and commit on scripted logits.

`ScriptedRunner` stands in for helios_core.engine.llama_runner.LlamaRunner behind the Runner
protocol (helios_core/engine/runner.py). Its "model" is a rule: the logits row after a token is
`rule(history)`, a function of the tokens the sequence's memory holds up to and including it.
It keeps that memory per sequence as llama.cpp's KV cache would, and insists that every
decoded token lands at the next free position, so a scheduler that rolled back too little or
too much fails at once (and its continuations change, since the rule reads the memory).

It records what the scheduler asked of it: each decode's chunks (`decoded`: one list per
decode of (seq_id, first position, tokens, adapter set)) and every cut of a sequence
(`trims`: (seq_id, positions kept)). `fail_next` makes the next decode raise, as a full KV
cache would, leaving the memory as it was; `step_seconds` makes each decode take that long.
An engine thread on it can be held between steps: hold(), then allow(n) decodes, or run_free().

Scripted rows do not depend on the batch, so here speculative and plain decoding must agree
token for token; with real llama.cpp kernels they agree up to near-ties (README, Determinism).

It lives in tests/ rather than helios_core: it is a test seam, it needs a vocabulary all the
same (a vocab-only Model: the sequences detokenize), and the Python API gains nothing from it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from helios_core.engine.slots import Plan
from helios_core.errors import ContextFullError, HeliosError
from helios_core.kvcache import CachedSequence
from helios_core.model import Model

Rule = Callable[[list[int]], np.ndarray]


class ScriptedRunner:
    """The Runner protocol over a vocab-only Model and a logits rule."""

    samples_in_graph = False  # no graph to draw in

    def __init__(
        self,
        model: Model,
        rule: Rule,
        *,
        n_seq_max: int = 1,
        n_ctx_seq: int = 512,
        n_batch: int = 256,
        step_seconds: float = 0.0,
    ):
        """step_seconds: how long each decode takes (a sleep), for tests of an engine thread that paces itself."""
        self.model = model
        self.step_seconds = step_seconds
        self.rule = rule
        self.n_seq_max = n_seq_max
        self.n_ctx_seq = n_ctx_seq
        self.n_batch = n_batch
        self.n_vocab = model.vocab.n_vocab
        self.memory: list[list[int]] = [[] for _ in range(n_seq_max)]
        self.adapters: tuple = ()  # the adapter set the last decode ran under
        self.decodes: list[int] = []  # batch sizes, one per decode
        self.decoded: list[list[tuple[int, int, list[int], tuple]]] = []
        self.trims: list[tuple[int, int]] = []
        self.fail_next: HeliosError | None = None
        self.blocked = False  # a decode waits for allow() or run_free()
        self._permits: int | None = None  # decodes allowed while held; None: free running
        self._gate = threading.Condition()
        self._rows: dict[int, np.ndarray] = {}
        self._outputs: list[np.ndarray] = []

    @property
    def tokens_decoded(self) -> int:
        return sum(self.decodes)

    def hold(self) -> None:
        """From now on each decode waits for a permit (allow())."""
        with self._gate:
            self._permits = 0

    def allow(self, n: int = 1) -> None:
        with self._gate:
            self._permits += n
            self._gate.notify_all()

    def run_free(self) -> None:
        with self._gate:
            self._permits = None
            self._gate.notify_all()

    def decode(self, plan: Plan) -> None:
        with self._gate:
            self.blocked = True
            self._gate.wait_for(lambda: self._permits is None or self._permits > 0)
            self.blocked = False
            if self._permits is not None:
                self._permits -= 1
        assert 0 < plan.n_tokens <= self.n_batch, f"a batch of {plan.n_tokens} tokens (n_batch {self.n_batch})"
        error, self.fail_next = self.fail_next, None
        if error is not None:
            raise error
        if self.step_seconds:
            time.sleep(self.step_seconds)
        for chunk in plan.chunks:  # checked before anything is held, so a refused batch leaves the memory be
            held = self.memory[chunk.slot.cache.seq_id]
            assert chunk.pos == len(held), f"a token decoded at position {chunk.pos}, but {len(held)} are held"
            if chunk.pos + len(chunk.tokens) > self.n_ctx_seq:
                raise ContextFullError(f"position {chunk.pos + len(chunk.tokens) - 1} is beyond the context", 1)
        self._rows, self._outputs = {}, []
        self.adapters = plan.lora
        self.decodes.append(plan.n_tokens)
        self.decoded.append([(c.slot.cache.seq_id, c.pos, [int(t) for t in c.tokens], plan.lora) for c in plan.chunks])
        for chunk in plan.chunks:
            held = self.memory[chunk.slot.cache.seq_id]
            for i, token in enumerate(chunk.tokens):
                row = chunk.rows.start + i
                held.append(int(token))
                if chunk.logits.start <= row < chunk.logits.stop:
                    logits = np.asarray(self.rule(list(held)), dtype=np.float32)
                    logits.flags.writeable = False
                    self._rows[row] = logits
                    self._outputs.append(logits)

    def logits(self, row: int) -> np.ndarray:
        return self._rows[row]

    def outputs(self) -> np.ndarray:
        rows = np.stack(self._outputs)
        rows.flags.writeable = False
        return rows

    def admit(
        self, free: Sequence[CachedSequence], chosen: CachedSequence, prompt: Sequence[int], adapters: tuple
    ) -> tuple[CachedSequence, int]:
        keep = min(chosen.common_prefix(prompt, adapters), len(prompt) - 1)
        chosen.lora = adapters
        self.trim(chosen, keep)
        return chosen, keep

    def clear(self, seq: CachedSequence) -> None:
        self.trim(seq, 0)

    def trim(self, seq: CachedSequence, keep: int) -> None:
        self.trims.append((seq.seq_id, keep))
        del self.memory[seq.seq_id][keep:]
        del seq.tokens[keep:]

    def forget(self, seq: CachedSequence) -> None:
        self.trim(seq, 0)

    def read_media(self, seq: CachedSequence, pos: int, media, budget: int, adapters: tuple) -> tuple[int, int]:
        raise HeliosError("a scripted runner reads no media")

    def graph_sampler(self, seq_id: int, chain):
        raise HeliosError("a scripted runner has no graph to sample in")


def peaked(n_vocab: int, weights: dict[int, float]) -> np.ndarray:
    """A logits row with these tokens at these logits and every other token out of reach."""
    row = np.full(n_vocab, -1e4, dtype=np.float32)
    for token, logit in weights.items():
        row[token] = logit
    return row
