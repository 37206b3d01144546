"""A context without weights, for testing the scheduler's plan and commit on scripted logits.

`ScriptedContext` stands in for helios_core.context.Context where the
Scheduler uses one. Its "model" is a rule: the logits row after a token are
`rule(history)`, a function of the tokens the sequence's memory holds up to
and including it. It keeps that memory per sequence as llama.cpp's KV cache
would, and insists that every decoded token lands at the next free position,
so a scheduler that rolled back too little or too much fails at once (and
its continuations change, since the rule reads the memory).

Scripted rows do not depend on the batch, so here speculative and plain
decoding must agree token for token; with real llama.cpp kernels they agree
up to near-ties (README, Determinism).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from helios_core.model import Model

Rule = Callable[[list[int]], np.ndarray]


class ScriptedContext:
    """The parts of Context the Scheduler uses, over a vocab-only Model and a logits rule."""

    def __init__(self, model: Model, rule: Rule, *, n_seq_max: int = 1, n_ctx_seq: int = 512, n_batch: int = 256):
        self.model = model
        self.rule = rule
        self.n_seq_max = n_seq_max
        self.n_ctx_seq = n_ctx_seq
        self.n_ctx = n_ctx_seq * n_seq_max
        self.n_batch = n_batch
        self.n_vocab = model.vocab.n_vocab
        self.memory: list[list[int]] = [[] for _ in range(n_seq_max)]
        self.lora: tuple = ()  # no LoRA adapters: lora.apply(ctx, ()) leaves it be
        self.decodes: list[int] = []  # batch sizes, one per decode
        self._rows: dict[int, np.ndarray] = {}

    def decode(self, batch) -> None:
        self._rows = {}
        self.decodes.append(batch.n_tokens)
        for i in range(batch.n_tokens):
            seq, pos, token = int(batch.seq_id[i, 0]), int(batch.pos[i]), int(batch.token[i])
            held = self.memory[seq]
            assert pos == len(held), f"sequence {seq}: a token decoded at position {pos}, but {len(held)} are held"
            held.append(token)
            if batch.logits[i]:
                row = np.asarray(self.rule(list(held)), dtype=np.float32)
                row.flags.writeable = False
                self._rows[i] = row
        self.tokens_decoded = sum(self.decodes)

    def logits(self, i: int = -1) -> np.ndarray:
        return self._rows[i]

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        assert p1 == -1, "the scheduler only ever cuts a sequence's tail"
        seqs = range(self.n_seq_max) if seq_id < 0 else [seq_id]
        for seq in seqs:
            del self.memory[seq][max(p0, 0) :]
        return True

    def seq_pos_min(self, seq_id: int) -> int:
        return 0 if self.memory[seq_id] else -1

    def seq_pos_max(self, seq_id: int) -> int:
        return len(self.memory[seq_id]) - 1


def peaked(n_vocab: int, weights: dict[int, float]) -> np.ndarray:
    """A logits row with these tokens at these logits and every other token out of reach."""
    row = np.full(n_vocab, -1e4, dtype=np.float32)
    for token, logit in weights.items():
        row[token] = logit
    return row
