"""Speculative decoding: draft a few tokens cheaply, verify them in one pass over the weights.

On a CPU one decode step reads every weight for one token per sequence, while
a chunk of several tokens costs little more than one. So a slot that can guess
its next tokens puts its last token plus k drafted ones into the step's batch
(a *verify chunk*, with logits for every row) and keeps as many as the model
agrees with, plus one token of the model's own: 1 to k + 1 tokens per step.

- Drafters propose the guesses (`Drafter.propose(tokens, k)`): `PromptLookup`
  copies what followed the latest earlier occurrence of the text's last few
  tokens (no second model: extraction, editing, code and summaries repeat
  their input), `DraftModel` runs a second, smaller GGUF that shares the
  vocabulary, greedily, in a context of its own.
- `verify` takes drafted tokens in order with the acceptance rule of
  speculative sampling (Leviathan et al. 2023; Chen et al. 2023) for a
  deterministic drafter: the drafted token x is kept with probability p(x),
  where p is what the request's sampler would draw from at that row;
  otherwise the token is drawn from p with x removed. Either way the token is
  distributed exactly as p, so the output is distributed as without
  speculation (under greedy, p is a point mass: the longest prefix that agrees
  with the argmax is kept). Only a sampler that exposes its distribution
  (`sampler.distribution(logits, state)`, as the built-in chain does) can be
  verified this way; the scheduler decodes every other request normally.
- `DraftLength` picks k per slot: it grows while drafts are taken whole and
  falls to 0 for a while after drafts are refused, so text with nothing to
  copy costs about what plain decoding costs.

The scheduler (engine.py) plans verify chunks, rolls the KV memory back over
refused positions and keeps the slot's cached tokens exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from helios_core.sampling.cut import Candidates, _draw, best_token

EMPTY = np.zeros(0, dtype=np.int32)
EMPTY.flags.writeable = False


class Drafter(Protocol):
    """Guesses the next tokens of one sequence.

    propose(tokens, k): up to k int32 token ids likely to follow `tokens` (the prompt
    and everything generated so far, a read-only view); fewer, or none, when it has
    no good guess. It must be deterministic given its inputs: the acceptance rule
    assumes the draft is not itself a sample.
    """

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class PromptLookup:
    """Drafts by copying: what followed the latest earlier occurrence of the last n tokens.

    n runs from ngram_max down to ngram_min, so the longest match wins; among
    matches of one length the latest (the most recent context) is taken. The
    search is one vectorised comparison over the sequence's tokens per step
    (microseconds for thousands of tokens); nothing is kept between calls.
    """

    ngram_max: int = 4
    ngram_min: int = 2

    def __post_init__(self):
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, {self.ngram_max}")

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray:
        n_tokens = tokens.size
        if k <= 0:
            return EMPTY
        for n in range(min(self.ngram_max, n_tokens - 1), self.ngram_min - 1, -1):
            tail = tokens[n_tokens - n :]
            # Starts of earlier occurrences: a match must end before the tail starts repeating it.
            starts = np.flatnonzero(tokens[: n_tokens - n] == tail[0])
            for j in range(1, n):
                if not starts.size:
                    break
                starts = starts[tokens[starts + j] == tail[j]]
            if starts.size:
                # What followed, and past the end of the text the same again: a text that
                # repeats itself with period n_tokens - follow goes on repeating.
                follow = int(starts[-1]) + n
                return np.resize(tokens[follow : follow + k], k).astype(np.int32, copy=False)
        return EMPTY

    def for_sequence(self, seq_id: int) -> PromptLookup:
        return self  # nothing per sequence


class DraftModel:
    """Drafts with a second model that shares the target's vocabulary: greedy, k tokens one by one.

    It keeps a context of its own with one sequence per slot of the target, and
    each sequence's cached tokens, so a step decodes only what the target
    accepted since the last draft plus the k new tokens. Runs on the thread that
    calls it (the engine thread); close() frees the context, not the model.
    """

    def __init__(self, model, n_seq: int, *, n_ctx_per_seq: int = 4096, n_threads: int | None = None,
                 target=None):
        from helios_core.batch import Batch
        from helios_core.context import Context
        from helios_core.kvcache import CachedSequence

        if target is not None:
            check_same_vocabulary(model, target)
        self.model = model
        self.ctx = Context(model, n_ctx=n_ctx_per_seq * n_seq, n_seq_max=n_seq, n_batch=512, n_threads=n_threads)
        self.caches = [CachedSequence(i) for i in range(n_seq)]
        self.batch = Batch(self.ctx.n_batch)

    def for_sequence(self, seq_id: int) -> Drafter:
        return _DraftSequence(self, seq_id)

    def propose(self, seq_id: int, tokens: np.ndarray, k: int) -> np.ndarray:
        if k <= 0:
            return EMPTY
        cache = self.caches[seq_id]
        cached = cache.reuse(self.ctx, tokens)  # leaves at least the last token to decode
        pending = tokens[cached:]
        if cached + pending.size + k > self.ctx.n_ctx_seq:
            return EMPTY
        pos = cached
        for start in range(0, pending.size, self.batch.capacity):
            chunk = pending[start : start + self.batch.capacity]
            self.batch.set(chunk, pos, seq_id, logits_last=True)
            self.ctx.decode(self.batch)
            cache.tokens.extend(chunk.tolist())
            pos += chunk.size
        draft = np.empty(k, dtype=np.int32)
        for i in range(k):
            draft[i] = best_token(self.ctx.logits(-1))
            if i + 1 < k:
                self.batch.set_one(int(draft[i]), pos, seq_id)
                self.ctx.decode(self.batch)
                cache.tokens.append(int(draft[i]))
                pos += 1
        return draft

    def close(self) -> None:
        self.ctx.close()


@dataclass(frozen=True)
class _DraftSequence:
    draft_model: DraftModel
    seq_id: int

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray:
        return self.draft_model.propose(self.seq_id, tokens, k)


def check_same_vocabulary(draft, target) -> None:
    """Raise ValueError unless `draft` (a Model) tokenizes like `target`: drafts are token ids of the target."""
    if draft.vocab.n_vocab != target.vocab.n_vocab:
        raise ValueError(f"the draft model has {draft.vocab.n_vocab} tokens in its vocabulary and the target "
                         f"{target.vocab.n_vocab}: a draft model must share the target's vocabulary")
    probe = "Speculative decoding, 2026: def f(x): return x ** 2  # ünïcode"
    if draft.vocab.tokenize(probe) != target.vocab.tokenize(probe):
        raise ValueError("the draft model tokenizes text differently from the target: it must share the "
                         "target's vocabulary")


@dataclass
class DraftLength:
    """How many tokens a slot drafts next (adaptive k).

    Doubles (up to k_max) when a draft is taken whole, keeps its length when part
    of one is taken, halves when none is, and after MISSES refused drafts in a row
    drafts nothing for a pause that doubles each time (up to MAX_PAUSE steps) and
    ends at the next accepted token. A drafter that finds no guess costs nothing
    and changes nothing.
    """

    k_max: int = 32
    k: int = 4
    misses: int = 0
    pause: int = 0  # steps left without drafting
    pauses: int = 0  # pauses in a row: each one twice as long

    MISSES = 3
    MAX_PAUSE = 64

    def __post_init__(self):
        self.k = max(1, min(self.k, self.k_max))

    def next(self) -> int:
        if self.pause:
            self.pause -= 1
            return 0
        return self.k

    def update(self, drafted: int, accepted: int) -> None:
        if not drafted:
            return
        if accepted:
            self.misses = 0
            self.pauses = 0
            if accepted == drafted:
                self.k = min(2 * self.k, self.k_max)
            return
        self.misses += 1
        self.k = max(1, self.k // 2)
        if self.misses >= self.MISSES:
            self.misses = 0
            self.pauses += 1
            self.pause = min(2**self.pauses, self.MAX_PAUSE)


@dataclass
class Speculation:
    """The scheduler's settings for speculative decoding.

    drafter: PromptLookup() (the default) or a DraftModel.
    draft_max: the most tokens one slot drafts in a step (DraftLength's k_max).
    draft_budget: the most drafted tokens in one step over all slots: when many slots
        generate, the batch is wide already and each verify chunk costs more, so the
        slots that ask first get their k and the rest less or none (the first asker
        takes turns from step to step).
    """

    drafter: PromptLookup | DraftModel = field(default_factory=PromptLookup)
    draft_max: int = 32
    draft_budget: int = 64

    def __post_init__(self):
        if self.draft_max < 1:
            raise ValueError(f"draft_max must be >= 1, got {self.draft_max}")
        if self.draft_budget < 1:
            raise ValueError(f"draft_budget must be >= 1, got {self.draft_budget}")

    def drafter_for(self, seq_id: int) -> Drafter:
        return self.drafter.for_sequence(seq_id)

    def draft_length(self) -> DraftLength:
        return DraftLength(k_max=self.draft_max)


def can_verify(sampler) -> bool:
    """Whether drafts can be verified for a request with this sampler: it must expose its distribution."""
    return callable(getattr(sampler, "distribution", None))


def accept_drafted(c: Candidates, drafted: int, rng: np.random.Generator) -> int:
    """The token at one drafted position: `drafted` with probability p(drafted), else a draw from p without it.

    `c` is the sampler's distribution at that row. The result is distributed
    exactly as a draw from `c`: p(x) = p(x) for the drafted token, and
    (1 - p(d)) * p(x) / (1 - p(d)) for every other x.
    """
    ids, weights = c.ids, c.weights
    if ids.size == 1:
        return int(ids[0])
    hit = np.flatnonzero(ids == drafted)
    if not hit.size:  # p(drafted) = 0: refused for sure, and p without it is p
        return int(ids[_draw(weights, rng)])
    weights = weights.astype(np.float64)
    if rng.random() * weights.sum() < weights[hit[0]]:
        return drafted
    weights[hit[0]] = 0.0
    return int(ids[_draw(weights, rng)])


def verify(seq, row: Callable[[int], np.ndarray], draft: np.ndarray) -> list:
    """The Steps a verify chunk yields for `seq` (a SequenceState): taken drafts, then one token of its own.

    row(i) is the logits row after the chunk's i-th token (row 0 follows the
    sequence's last token and judges draft[0]). Rows are processed one at a
    time, each after the tokens before it were accepted, so penalties and other
    processors see exactly the history they would see without speculation.
    Stops at the first refused draft, after the token past a whole draft, or
    at a step that ends the request.
    """
    steps = []
    distribution = seq.sampler.distribution
    for i in range(draft.size + 1):
        logits = row(i)
        processed = seq.process(logits)
        if i < draft.size:
            token = accept_drafted(distribution(processed, seq.state), int(draft[i]), seq.rng)
        else:
            token = int(seq.sampler(processed, seq.state))
        step = seq.accept(token, logits)
        steps.append(step)
        if step.finish_reason or i == draft.size or token != draft[i]:
            break
    return steps

