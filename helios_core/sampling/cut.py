"""The candidate set: the few tokens of a logits row that can carry probability, cut once per step.

Gemma's vocabulary has 262,144 entries, where a full softmax costs more than
a model step. `candidates()` keeps the tokens within CUTOFF temperature-scaled
logits of the best, with weights exp(scaled - best); every filter
(filters.py) works on that set, and `draw` picks one token from it.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

# Tokens more than CUTOFF temperature-scaled logits below the best are
# dropped. Each weighs under exp(-20) = 2e-9 of the best token, far below
# float32's resolution (6e-8) of a sum that includes the best token's 1, so a
# float32 softmax such as llama.cpp's rounds every one of them away too. Over
# 150 real Gemma 3 rows at temperature 0.8 they held at most 1.2e-5 of the
# mass together (median 2.8e-6), while the cut leaves a median 6.6k of the
# 262k tokens instead of 100k (benchmarks/sampler_cutoff.py measures this).
CUTOFF = 20.0

# Below this temperature the distribution is a point mass for any logit gap
# above 1e-4, and 1 / temperature would overflow float32: only the best token is left.
MIN_TEMPERATURE = 1e-6

# Blocks for the inverse-CDF search: sums per block, then one block's cumsum.
_BLOCK = 256

# Groups of the vocabulary whose maxima bound the k-th best logit (top-k's cut).
_GROUPS = 1024

_scratch = threading.local()


class Candidates(NamedTuple):
    """Tokens that can still be drawn, and how likely each is relative to the others.

    ids: token ids (int64), in the order the set was cut (ascending) unless a filter says otherwise.
    weights: float32 unnormalised probabilities, each in (0, 1]: exp(scaled logit - best
        scaled logit) as cut, so the best token of the cut weighs 1. Filters drop entries;
        only apply_temperature reshapes them. `probs()` normalises.
    logits: the vocabulary row the set was cut from, for filters that need statistics of the
        whole vocabulary (top-n-sigma). A view: valid as long as the row, i.e. until the next
        decode. None for a hand-built set.
    """

    ids: np.ndarray
    weights: np.ndarray
    logits: np.ndarray | None = None

    def probs(self) -> np.ndarray:
        """The weights normalised to sum to 1, float64."""
        weights = self.weights.astype(np.float64)
        return weights / weights.sum()

    def keep(self, selection: np.ndarray) -> Candidates:
        """The subset picked by a boolean mask or an index array (in that array's order)."""
        return self._replace(ids=self.ids[selection], weights=self.weights[selection])


def candidates(logits: np.ndarray, temperature: float = 1.0, *, cutoff: float = CUTOFF) -> Candidates:
    """The tokens within `cutoff` scaled logits of the best, weighted exp((logit - best) / temperature).

    This is the softmax of logits / temperature over the whole row, restricted to
    the tokens it does not round to zero, and left unnormalised. temperature 0
    (or below MIN_TEMPERATURE) leaves the single best token (the lowest id on a tie,
    as greedy). Logits of +inf win outright (uniformly among them); NaN, or every
    logit -inf, is a ValueError.
    """
    if not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not cutoff > 0:
        raise ValueError(f"cutoff must be > 0, got {cutoff}")
    if temperature < MIN_TEMPERATURE:
        return Candidates(np.array([best_token(logits)]), np.ones(1, dtype=np.float32), logits)
    ids, weights = _candidates(logits, temperature, cutoff)
    return Candidates(ids, weights, logits)


def softmax(x: np.ndarray) -> np.ndarray:
    """exp(x - max(x)) / sum, in float64: a softmax that cannot overflow, for any finite x."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def draw(c: Candidates, rng: np.random.Generator) -> int:
    """One token id of `c`, with probability proportional to its weight."""
    if c.ids.size == 0:
        raise ValueError("the candidate set is empty: no token can be chosen")
    return int(c.ids[_draw(c.weights, rng)])


def best_token(logits: np.ndarray) -> int:
    """The most likely token (ties: the lowest id, as llama.cpp's greedy sampler)."""
    # One pass: argmax returns the first of equal maxima, and the first NaN if there is one.
    token = int(logits.argmax())
    if logits[token] != logits[token]:
        raise ValueError("the logits contain NaN: no token can be chosen")
    return token


# --- kernels shared by the filters and the fused fast path (chain.py) --------------


def _candidates(logits: np.ndarray, temperature: float, floor: float, top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids within `floor` scaled logits of the best (ascending), and their float32 weights.

    The best token has weight 1, so float32 loses nothing that matters: each
    weight keeps 24 bits relative to itself, and sums are taken in float64.
    top_k > 0 keeps only the k heaviest of them.
    """
    top = float(logits.max())
    if math.isfinite(top):
        threshold = top - floor * temperature
        if 0 < top_k <= _GROUPS:  # a far tighter cut that still holds the k best: few ids to gather
            threshold = max(threshold, _kth_best_bound(logits, top_k))
        ids = np.greater_equal(logits, threshold, out=_mask(logits.shape)).nonzero()[0]
        weights = logits[ids]  # a fresh array: scaled and exponentiated in place
        weights -= top
        weights *= 1.0 / temperature
        np.exp(weights, out=weights)
    else:
        ids, weights = _non_finite_candidates(logits, top)
    return _top_k(ids, weights, top_k) if top_k else (ids, weights)


def _mask(shape: tuple[int, ...]) -> np.ndarray:
    """This thread's boolean scratch row of `shape`: the cut's compare writes into it instead of a fresh
    262,144-byte array each token, and it stays in cache from one token to the next."""
    mask = getattr(_scratch, "mask", None)
    if mask is None or mask.shape != shape:
        mask = _scratch.mask = np.empty(shape, dtype=bool)
    return mask


def _non_finite_candidates(logits: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray]:
    if math.isnan(top) or np.isnan(logits).any():
        raise ValueError("the logits contain NaN: no token can be chosen")
    if top < 0:
        raise ValueError("every token's logit is -inf: no token can be chosen")
    ids = np.flatnonzero(logits == np.inf)
    return ids, np.ones(ids.size, dtype=np.float32)


def _kth_best_bound(logits: np.ndarray, k: int) -> float:
    """A logit that at least k tokens reach, so the k best all do: the k-th largest of group maxima.

    Gathering the ids of tens of thousands of candidates costs more than the
    rest of a sampler; top-k needs only the k best. Each of _GROUPS groups
    (token i is in group i mod _GROUPS) contributes its best, and k groups
    whose best reaches v are k tokens that reach v.
    """
    width = logits.size // _GROUPS
    if width == 0:
        return -math.inf
    maxima = logits[: width * _GROUPS].reshape(width, _GROUPS).max(axis=0)
    return float(np.partition(maxima, _GROUPS - k)[_GROUPS - k])


def _top_k(ids: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k heaviest entries, in their original order (so the fast path and the filters agree)."""
    if k >= ids.size:
        return ids, weights
    heaviest = np.sort(np.argpartition(weights, ids.size - k)[ids.size - k :])
    return ids[heaviest], weights[heaviest]


def _draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """Index i with probability weights[i] / weights.sum(): inverse CDF over block sums."""
    n = weights.size
    if n == 1:
        return 0
    if n <= 4 * _BLOCK:  # a few hundred weights: one cumsum is cheaper than the block bookkeeping
        cumulative = weights.cumsum(dtype=np.float64)
        return min(int(cumulative.searchsorted(rng.random() * cumulative[-1], side="right")), n - 1)
    full = n - n % _BLOCK
    block_sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    edges = np.append(block_sums, weights[full:].sum(dtype=np.float64)).cumsum()
    u = rng.random() * edges[-1]
    block = min(int(edges.searchsorted(u, side="right")), edges.size - 1)
    start = block * _BLOCK
    inside = weights[start : min(start + _BLOCK, n)].cumsum(dtype=np.float64)
    offset = u - (edges[block - 1] if block else 0.0)
    return start + min(int(inside.searchsorted(offset, side="right")), inside.size - 1)
