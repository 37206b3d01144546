"""Samplers and logits processors: the plug-in points of the token loop.

The contract:

    Sampler        = Callable[[logits, SamplingState], int]
    LogitsProcessor = Callable[[logits, SamplingState], logits]

`logits` is the float32 NumPy array of shape (n_vocab,) for the sequence's
next token. The loop hands processors and samplers llama.cpp's own buffer
(a read-only view, valid until the next decode): a processor returns a
modified *copy*, never writes in place. Processors run in order, then the
sampler picks one token id. `state` carries the sequence's token history
(prompt and generated, int32), its own `numpy.random.Generator`, and the
step number (0 for the first generated token).

A processor written for the `(input_ids, scores)` convention of
transformers or llama-cpp-python adapts in one line:

    processor = lambda logits, state: theirs(state.tokens, logits.copy())

Everything here is vectorised over the vocabulary. Gemma's vocabulary has
262,144 entries, where a full softmax costs more than a model step, so the
samplers first cut to the tokens that can carry probability at float
precision, then work on those few.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingState:
    """What a sampler or processor may know about its sequence.

    tokens: every token so far, prompt then generated, int32 (a view; do not keep it).
    rng: this sequence's random generator (seeded per request).
    step: index of the token being chosen, 0 for the first generated token.
    n_prompt: how many of `tokens` are the prompt.
    """

    tokens: np.ndarray
    rng: np.random.Generator
    step: int = 0
    n_prompt: int = 0


Sampler = Callable[[np.ndarray, SamplingState], int]
LogitsProcessor = Callable[[np.ndarray, SamplingState], np.ndarray]
# The batched form: the (n_rows, n_vocab) float32 rows of every sequence that uses this
# sampler in a step (read-only, valid until the next decode; rows after processors when
# a sequence has any) and their states, in the same order -> n_rows token ids.
BatchSampler = Callable[[np.ndarray, Sequence[SamplingState]], Sequence[int] | np.ndarray]

# Tokens more than CUTOFF temperature-scaled logits below the best are
# dropped. Each weighs under exp(-20) = 2e-9 of the best token, far below
# float32's resolution (6e-8) of a sum that includes the best token's 1, so a
# float32 softmax such as llama.cpp's rounds every one of them away too. Over
# 150 real Gemma 3 rows at temperature 0.8 they held at most 1.2e-5 of the
# mass together (median 2.8e-6), while the cut leaves a median 6.6k of the
# 262k tokens instead of 100k (benchmarks/sampler_cutoff.py measures this).
CUTOFF = 20.0

# Blocks for the inverse-CDF search: sums per block, then one block's cumsum.
_BLOCK = 256

# Below this temperature the distribution is a point mass for any logit gap
# above 1e-4, and 1 / temperature would overflow float32: sample greedily.
MIN_TEMPERATURE = 1e-6


def greedy(logits: np.ndarray, state: SamplingState) -> int:
    """The most likely token (ties: the lowest id, as llama.cpp's greedy sampler)."""
    # NumPy's float32 max is SIMD and its bool argmax stops at the first True:
    # together 25% cheaper than argmax on 262k floats, with the same answer.
    best = logits == logits.max()
    token = int(best.argmax())
    if not best[token]:
        raise ValueError("the logits contain NaN: no token can be chosen")
    return token


def make_sampler(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Sampler:
    """The usual chain: temperature, then top-k, min-p and top-p on the tempered distribution.

    temperature == 0 is greedy. top_k == 0, top_p == 1 and min_p == 0 are off.
    The random draw uses `state.rng`, so a seeded generator gives reproducible text.
    """
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    if temperature < MIN_TEMPERATURE or top_k == 1:
        return greedy

    # min-p keeps p >= min_p * p_max, i.e. scaled logits >= log(min_p): a tighter cut-off.
    floor = min(CUTOFF, -math.log(min_p)) if min_p > 0 else CUTOFF

    def sample(logits: np.ndarray, state: SamplingState) -> int:
        ids, weights = _candidates(logits, temperature, floor, top_k)
        if not np.isfinite(weights).all():  # e.g. a processor pushed logits to +-inf
            raise ValueError("the processed logits overflow: no distribution to sample from")
        if top_p < 1.0:
            ids, weights = _nucleus(ids, weights, top_p)
        return int(ids[_draw(weights, state.rng)])

    return sample


def _candidates(logits: np.ndarray, temperature: float, floor: float, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids within `floor` scaled logits of the best, and their float32 weights exp(scaled - best).

    The best token has weight 1, so float32 loses nothing that matters: each
    weight keeps 24 bits relative to itself, and sums are taken in float64.
    Logits of +inf win outright (uniformly among them); NaN or all -inf is an error.
    """
    top = float(logits.max())
    if not math.isfinite(top):
        return _non_finite_candidates(logits, top)
    ids = np.flatnonzero(logits >= top - floor * temperature)
    if 0 < top_k < ids.size:
        ids = ids[np.argpartition(logits[ids], ids.size - top_k)[ids.size - top_k :]]
    weights = logits[ids]  # a fresh array: scaled and exponentiated in place
    weights -= top
    weights *= 1.0 / temperature
    np.exp(weights, out=weights)
    return ids, weights


def _non_finite_candidates(logits: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray]:
    if math.isnan(top) or np.isnan(logits).any():
        raise ValueError("the logits contain NaN: no token can be chosen")
    if top < 0:
        raise ValueError("every token's logit is -inf: no token can be chosen")
    ids = np.flatnonzero(logits == np.inf)
    return ids, np.ones(ids.size, dtype=np.float32)


# Each widening of the nucleus search lowers the weight threshold by this factor.
_NUCLEUS_STEP = math.exp(-3.0)


def _nucleus(ids: np.ndarray, weights: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The smallest set of most likely tokens whose mass reaches top_p.

    Sorting tens of thousands of candidates costs milliseconds, while the
    nucleus is usually a handful. Every token at or above a weight threshold
    is more likely than every token below it, so once the tokens above a
    threshold hold top_p of the mass, the nucleus lies among them: lower the
    threshold until it does (one compare-and-sum pass each), then sort those.
    """
    target = top_p * weights.sum(dtype=np.float64)
    threshold = _NUCLEUS_STEP
    while True:
        inside = np.flatnonzero(weights >= threshold)
        # Weights are finite and in (0, 1], so the threshold reaches them all within ~40 rounds.
        if weights[inside].sum(dtype=np.float64) >= target or inside.size == weights.size or threshold == 0.0:
            break
        threshold *= _NUCLEUS_STEP
    order = inside[np.argsort(weights[inside], kind="stable")[::-1]]
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    keep = order[: min(int(np.searchsorted(cumulative, target)) + 1, order.size)]
    return ids[keep], weights[keep]


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """Index i with probability weights[i] / weights.sum(): inverse CDF over block sums."""
    n = weights.size
    if n == 1:
        return 0
    if n <= 4 * _BLOCK:  # a few hundred weights: one cumsum is cheaper than the block bookkeeping
        cumulative = np.cumsum(weights, dtype=np.float64)
        return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), n - 1)
    full = n - n % _BLOCK
    block_sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    edges = np.cumsum(np.append(block_sums, weights[full:].sum(dtype=np.float64)))
    u = rng.random() * edges[-1]
    block = min(int(np.searchsorted(edges, u, side="right")), edges.size - 1)
    start = block * _BLOCK
    inside = np.cumsum(weights[start : min(start + _BLOCK, n)], dtype=np.float64)
    offset = u - (edges[block - 1] if block else 0.0)
    return start + min(int(np.searchsorted(inside, offset, side="right")), inside.size - 1)


# --- logits processors ------------------------------------------------------


def make_repetition_penalty(penalty: float, context_size: int = 64) -> LogitsProcessor:
    """llama.cpp / CTRL repetition penalty over the last `context_size` tokens.

    A seen token's logit is divided by `penalty` when positive and multiplied
    when negative, so it always becomes less likely. 1.0 is off.
    """
    if penalty <= 0:
        raise ValueError(f"repetition penalty must be > 0, got {penalty}")

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        seen = np.unique(state.tokens[-context_size:])
        out = logits.copy()
        values = out[seen]
        out[seen] = np.where(values > 0, values / penalty, values * penalty)
        return out

    return process


def make_presence_frequency_penalty(presence: float = 0.0, frequency: float = 0.0,
                                    context_size: int | None = None) -> LogitsProcessor:
    """OpenAI's penalties over generated tokens: logit -= presence * [seen] + frequency * count.

    Both lie in [-2, 2] in OpenAI's API. context_size limits the window (None = all generated).
    """
    for name, value in (("presence", presence), ("frequency", frequency)):
        if not -2.0 <= value <= 2.0:
            raise ValueError(f"{name} penalty must be in [-2, 2], got {value}")

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        generated = state.tokens[state.n_prompt :]
        if context_size is not None:
            generated = generated[-context_size:]
        if generated.size == 0:
            return logits
        ids, counts = np.unique(generated, return_counts=True)
        out = logits.copy()
        out[ids] -= presence + frequency * counts
        return out

    return process


def make_logit_bias(bias: Mapping[int, float]) -> LogitsProcessor:
    """Add a fixed bias to given token ids (OpenAI's logit_bias; -100 bans, +100 forces)."""
    ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
    values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        out = logits.copy()
        out[ids] += values
        return out

    return process


def make_logits_processors(*, repetition_penalty: float = 1.0, repetition_context: int = 64,
                           presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                           logit_bias: Mapping[int, float] | None = None) -> list[LogitsProcessor]:
    """The built-in processors a request asked for, in llama.cpp's order (penalties, then bias)."""
    processors: list[LogitsProcessor] = []
    if repetition_penalty != 1.0:
        processors.append(make_repetition_penalty(repetition_penalty, repetition_context))
    if presence_penalty or frequency_penalty:
        processors.append(make_presence_frequency_penalty(presence_penalty, frequency_penalty))
    if logit_bias:
        processors.append(make_logit_bias(logit_bias))
    return processors


# --- log-probabilities ------------------------------------------------------


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float


def logprobs(logits: np.ndarray, token: int, top_n: int = 0) -> tuple[float, list[TokenLogprob]]:
    """log-softmax of `token`, and the `top_n` most likely tokens with theirs.

    Costs one pass of exp over the vocabulary, so the loop calls it only when asked.
    """
    top = float(logits.max())
    log_total = top + math.log(float(np.exp(logits - top, dtype=np.float32).sum(dtype=np.float64)))
    chosen = float(logits[token]) - log_total
    if top_n <= 0:
        return chosen, []
    best = np.argpartition(logits, logits.size - top_n)[logits.size - top_n :]
    best = best[np.argsort(logits[best])[::-1]]
    return chosen, [TokenLogprob(int(t), float(logits[t]) - log_total) for t in best]


def apply_processors(logits: np.ndarray, processors: Sequence[LogitsProcessor], state: SamplingState) -> np.ndarray:
    for process in processors:
        logits = process(logits, state)
    return logits
