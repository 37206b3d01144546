"""Speculative decoding: draft a few tokens cheaply, verify them in one pass over the weights.

One decode step reads every weight for one token per sequence, while a
chunk of several tokens shares that read. So a slot that can guess
its next tokens puts its last token plus k drafted ones into the step's batch
(a *verify chunk*, with logits for every row) and keeps as many as the model
agrees with, plus one token of the model's own: 1 to k + 1 tokens per step.

- Drafters propose the guesses (`Drafter.propose(tokens, k)`): `PromptLookup`
  copies what followed the earlier occurrence that matches the most of the
  text's end (no second model: extraction, editing, code and summaries repeat
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
- How many drafted tokens a step verifies is a bet on cost: each row of a
  verify chunk computes the whole output head, which on Gemma's 262k-token
  vocabulary is most of a step (`StepCost`). Each slot's chance of keeping a
  drafted token is estimated from its drafter's evidence (how long the
  copied match is) and from what its own drafts did (`AcceptanceRates`,
  `SlotAcceptance`), and `allocate` drafts the tokens that give the most
  expected tokens per cost, none when nothing pays: text with nothing to
  copy costs what plain decoding costs.

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

    A drafter that costs nothing to ask may also have lookup(tokens, k) -> (draft,
    evidence), evidence being how strongly it believes the draft (PromptLookup: the
    tokens matched); it is then asked for the most tokens a step could verify, and
    judged by its evidence (Speculation.offer).
    """

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class PromptLookup:
    """Drafts by copying: what followed the earlier occurrence that matches the most of the text's end.

    The match is the longest suffix of the text (ngram_min to ngram_max
    tokens) seen earlier; among matches of one length the latest (the most
    recent context) is taken. Its length is the evidence `lookup` returns:
    a text that has matched 30 tokens in a row is being copied and will likely
    go on, one that matched 2 is a guess. The search is a few vectorised
    comparisons over the sequence's tokens per step (microseconds for
    thousands of tokens); nothing is kept between calls.
    """

    ngram_max: int = 64
    ngram_min: int = 2

    def __post_init__(self):
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, {self.ngram_max}")

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray:
        return self.lookup(tokens, k)[0]

    def lookup(self, tokens: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        """Up to k drafted tokens, and how many tokens of the text's end matched (0: no draft)."""
        n_tokens = tokens.size
        if k <= 0 or n_tokens < 2:
            return EMPTY, 0
        # Ends of earlier occurrences of the text's last `length` tokens (an end before the text's
        # last token, so something follows it), narrowed one token further back at a time.
        ends = np.flatnonzero(tokens[: n_tokens - 1] == tokens[n_tokens - 1])
        length = 1
        while ends.size > 1 and length < self.ngram_max:
            earlier = ends - length
            ends_longer = ends[earlier >= 0]
            ends_longer = ends_longer[tokens[ends_longer - length] == tokens[n_tokens - 1 - length]]
            if not ends_longer.size:
                break
            ends, length = ends_longer, length + 1
        if ends.size == 1:  # one candidate left: measure the rest of its match in one comparison
            end = int(ends[0])
            span = min(self.ngram_max, end + 1)
            differ = np.flatnonzero(tokens[end + 1 - span : end + 1][::-1] != tokens[n_tokens - span :][::-1])
            length = int(differ[0]) if differ.size else span
        if not ends.size or length < self.ngram_min:
            return EMPTY, 0
        # What followed, and past the end of the text the same again: a text that
        # repeats itself with period n_tokens - follow goes on repeating.
        follow = int(ends[-1]) + 1
        return np.resize(tokens[follow : follow + k], k).astype(np.int32, copy=False), length

    def for_sequence(self, seq_id: int) -> PromptLookup:
        return self  # nothing per sequence


class DraftModel:
    """Drafts with a second model that shares the target's vocabulary: greedy, k tokens one by one.

    It keeps a context of its own with one sequence per slot of the target, and
    each sequence's cached tokens, so a step decodes only what the target
    accepted since the last draft plus the k new tokens. Runs on the thread that
    calls it (the engine thread); close() frees the context, not the model.
    """

    def __init__(self, model, n_seq: int, *, n_ctx_per_seq: int = 4096, n_threads: int | None = None, target=None):
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
        raise ValueError(
            f"the draft model has {draft.vocab.n_vocab} tokens in its vocabulary and the target "
            f"{target.vocab.n_vocab}: a draft model must share the target's vocabulary"
        )
    probe = "Speculative decoding, 2026: def f(x): return x ** 2  # ünïcode"
    if draft.vocab.tokenize(probe) != target.vocab.tokenize(probe):
        raise ValueError(
            "the draft model tokenizes text differently from the target: it must share the target's vocabulary"
        )


@dataclass(frozen=True)
class StepCost:
    """What one decode costs, in plain one-token steps, by how many logits rows it computes.

    On Gemma's 262,144-token vocabulary the output head is most of the work of
    a step, and llama.cpp's CPU kernels (the repacked Q8_0/Q4 GEMMs of ggml)
    multiply it four rows at a time: the rows of whole groups of `quantum`
    share each pass over the head's weights, and the rows left over take a
    slower path, the first of them about a whole pass. benchmarks/
    bench_verify_rows.py measured on the default model, 2 threads (AVX-512):
    1 row 1.0, 2 rows 2.0, 3 rows 2.4, 4 rows 2.47, 5 rows 3.83, 6 rows 4.12,
    7 rows 4.63, 8 rows 3.72, 9 rows 4.91, 12 rows 4.75, 13 rows 6.03,
    16 rows 6.26, 17 rows 7.36, 33 rows 10.6; the defaults fit these. So
    draft lengths that fill whole groups are nearly free beside those that
    leave a row over, and short drafts on their own do not pay.
    """

    quantum: int = 4
    first_group: float = 1.3  # a step with whole groups: this, plus per_group for each
    per_group: float = 1.15
    first_spare: float = 1.25  # the first row beside whole groups, then each further one
    next_spare: float = 0.45
    lone_row: float = 1.0  # each row of a step too small for a whole group

    def __call__(self, rows: int) -> float:
        groups, rest = divmod(rows, self.quantum)
        if not groups:
            return self.lone_row * rest
        spares = self.first_spare + self.next_spare * (rest - 1) if rest else 0.0
        return self.first_group + self.per_group * groups + spares

    def best_length(self, acceptance: float, k_max: int) -> int:
        """The draft length that gives one sequence decoding alone the most tokens per cost."""
        return allocate([(k_max, acceptance)], 1, k_max, self)[0]


def allocate(offers: list[tuple[int, float]], rows: int, budget: int, cost: StepCost) -> list[int]:
    """How many drafted tokens each offer puts into a step: the most expected tokens per cost.

    offers: per sequence that can draft, (tokens it can draft, acceptance), where
    acceptance is the chance that each drafted token is kept given the one before
    was. rows: logits rows the step has without drafts (one per generating
    sequence). A sequence's j-th drafted token yields acceptance**j tokens in
    expectation, less with each, so drafted tokens are taken greedily, the most
    likely next, and the allocation kept is the best seen on the way: with
    nothing worth its rows, no drafts at all.
    """
    lengths = [0] * len(offers)
    gains = [a if most > 0 else 0.0 for most, a in offers]  # what each offer's next drafted token yields
    expected = float(rows)
    best_value, best = expected / cost(rows), list(lengths)
    for _ in range(budget):
        gain = max(gains, default=0.0)
        if gain <= 0.0:
            break
        i = gains.index(gain)
        lengths[i] += 1
        most, a = offers[i]
        gains[i] = gain * a if lengths[i] < most else 0.0
        expected += gain
        rows += 1
        value = expected / cost(rows)
        if value > best_value:
            best_value, best = value, list(lengths)
    return best


# Acceptance is estimated per bucket of a drafter's evidence (prompt lookup: how many tokens
# matched; 2-3, 4-7, 8-15, 16-31, 32 and more; 0 for a draft model), greedy and sampled requests
# apart. Before drafts are judged, a bucket believes these rates, worth PRIOR_WEIGHT judged tokens.
# The greedy ones are what prompt lookup's drafts would have kept of plain greedy decoding on the
# default model (the benchmark's copy prompts and the tests' 30 prompts: 0.77-0.94 for 2-3 matched
# tokens, 0.91-0.94 for 4-7, 0.96-0.99 for 8-15, 0.99 and more past that); the sampled ones are
# guesses, and a draft model starts hopeful so that it is tried.
PRIOR_RATE = {
    True: {0: 0.8, 1: 0.8, 2: 0.9, 3: 0.96, 4: 0.98, 5: 0.99},
    False: {0: 0.75, 1: 0.3, 2: 0.4, 3: 0.5, 4: 0.6, 5: 0.7},
}
PRIOR_WEIGHT = 4.0


def evidence_bucket(evidence: int) -> int:
    """0 for a drafter with no evidence (a draft model), else 1 + floor(log2(evidence / 2)), at most 5."""
    return 0 if evidence <= 0 else min(5, max(1, evidence.bit_length() - 1))


@dataclass
class _Verdicts:
    """Kept drafted tokens and refusals (drafts cut short), fading: the estimate of a geometric run."""

    kept: float = 0.0
    refused: float = 0.0

    def add(self, drafted: int, kept: int) -> None:
        self.kept += kept
        self.refused += kept < drafted

    def faded_rate(self, fade: float, prior: float, prior_weight: float) -> float:
        """Fade the counts once, then kept / (kept + refused), with `prior` worth prior_weight tokens."""
        self.kept *= fade
        self.refused *= fade
        return (self.kept + prior_weight * prior) / (self.kept + self.refused + prior_weight)


@dataclass
class AcceptanceRates:
    """What fraction of drafted tokens the target keeps, by kind of request and strength of evidence.

    A bucket's counts fade by FADE each time it is asked, so the table follows
    the last few hundred steps, and a bucket whose drafts stopped paying drifts
    back to its prior and is tried again. One table serves every slot of a
    scheduler.
    """

    counts: dict[tuple[bool, int], _Verdicts] = field(default_factory=dict)

    FADE = 0.995

    def rate(self, key: tuple[bool, int]) -> float:
        greedy, bucket = key
        return self.counts.setdefault(key, _Verdicts()).faded_rate(self.FADE, PRIOR_RATE[greedy][bucket], PRIOR_WEIGHT)

    def record(self, key: tuple[bool, int], drafted: int, kept: int) -> None:
        self.counts.setdefault(key, _Verdicts()).add(drafted, kept)


@dataclass
class SlotAcceptance(_Verdicts):
    """One request's own record of kept and refused drafts: adaptive k, per sequence.

    Its estimate leans on the shared table's rate for the evidence at hand
    (worth SHARED_WEIGHT tokens) and moves with what this request's drafts
    did: kept drafts raise it, so drafts grow; refused ones lower it below what
    pays, so the sequence stops drafting. The record fades by FADE every step
    it is asked, drafting or not, so a sequence that stopped drafting tries
    again some steps later.
    """

    SHARED_WEIGHT = 2.0
    FADE = 0.9

    def rate(self, shared: float) -> float:
        return self.faded_rate(self.FADE, shared, self.SHARED_WEIGHT)

    def record(self, drafted: int, kept: int) -> None:
        self.add(drafted, kept)


@dataclass
class Offer:
    """A sequence's drafted tokens for one step, before the step decides how many to verify."""

    draft: np.ndarray
    acceptance: float
    key: tuple[bool, int]  # the AcceptanceRates bucket the verdict is recorded under


@dataclass
class Speculation:
    """The scheduler's settings for speculative decoding, and what it has learnt of its drafts.

    drafter: PromptLookup() (the default) or a DraftModel.
    draft_max: the most tokens one slot drafts in a step.
    draft_budget: the most drafted tokens in one step over all slots.
    cost: what a step costs by its logits rows; with the acceptance estimates it decides
        how many tokens each slot verifies (`allocate`): none where drafts do not pay,
        fewer per slot when many slots generate and the batch is wide already.
    """

    drafter: PromptLookup | DraftModel = field(default_factory=PromptLookup)
    draft_max: int = 32
    draft_budget: int = 64
    cost: StepCost = field(default_factory=StepCost)
    rates: AcceptanceRates = field(default_factory=AcceptanceRates)

    def __post_init__(self):
        if self.draft_max < 1:
            raise ValueError(f"draft_max must be >= 1, got {self.draft_max}")
        if self.draft_budget < 1:
            raise ValueError(f"draft_budget must be >= 1, got {self.draft_budget}")

    def drafter_for(self, seq_id: int) -> Drafter:
        return self.drafter.for_sequence(seq_id)

    def offer(
        self, drafter: Drafter, record: SlotAcceptance, tokens: np.ndarray, k_max: int, greedy: bool
    ) -> Offer | None:
        """What one sequence could verify this step (at most k_max tokens), None for nothing.

        A drafter with `lookup` (prompt lookup) costs nothing to ask, so it is
        asked for k_max tokens and judged by its evidence; any other (a draft
        model pays a decode per token) is asked only for the tokens that pay
        for this sequence alone.
        """
        lookup = getattr(drafter, "lookup", None)
        draft, evidence = lookup(tokens, k_max) if lookup is not None else (None, 0)
        key = (greedy, evidence_bucket(evidence))
        acceptance = record.rate(self.rates.rate(key))
        if draft is None:
            k = self.cost.best_length(acceptance, k_max)
            draft = drafter.propose(tokens, k)[:k] if k else EMPTY
        return Offer(draft, acceptance, key) if draft.size else None

    def judged(self, record: SlotAcceptance, offer_key: tuple[bool, int], drafted: int, kept: int) -> None:
        """Take in how many of a verified draft's tokens were kept."""
        record.record(drafted, kept)
        self.rates.record(offer_key, drafted, kept)


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
        token = seq.forced_token()  # a token the engine writes (a reasoning budget's end) refuses a draft of another
        if token is None and i < draft.size:
            token = accept_drafted(distribution(processed, seq.state), int(draft[i]), seq.rng)
        elif token is None:
            token = int(seq.sampler(processed, seq.state))
        step = seq.accept(token, logits)
        steps.append(step)
        if step.finish_reason or i == draft.size or token != draft[i]:
            break
    return steps
