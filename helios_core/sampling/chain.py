"""make_sampler: the built-in sampling chain from plain settings, and greedy.

The chain runs, in this order, on the tempered distribution:

    temperature -> top-n-sigma -> top-k -> typical -> top-p -> min-p -> XTC -> draw

llama.cpp's default chain (common/common.h) has the same order but tempers
last, so there top-p, min-p, typical and XTC see untempered probabilities;
here they see the tempered ones, as in transformers' generate(). Top-k and
top-n-sigma do not depend on the temperature. Mirostat replaces the chain,
as in llama.cpp.

The common chain (temperature, top-k, top-p, min-p) runs fused: the same
kernels as the filters, on bare arrays. Both paths fold the filters that
keep the best tokens down to a bound (top-k, top-n-sigma, min-p) into the
vocabulary cut, which then gathers a few ids instead of thousands. Tests
hold every path to the pure filters composed in this order: the same
tokens from the same seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from helios_core.sampling.contract import Sampler, SamplingState
from helios_core.sampling.cut import CUTOFF, MIN_TEMPERATURE, Candidates, _candidates, _draw, best_token, draw
from helios_core.sampling.filters import (
    _finite_std,
    _min_p_mask,
    _nucleus,
    _top_n_sigma_mask,
    apply_min_p,
    apply_top_p,
    apply_typical,
    apply_xtc,
)
from helios_core.sampling.mirostat import make_mirostat_v2
from helios_core.sampling.params import DEFAULT_TEMPERATURE, SETTINGS_BY_NAME

# A filter folded into the cut moves the cut to its bound plus this many scaled
# logits, so that the filter's own exact test still decides every token:
# float rounding moves a scaled logit by ~1e-6, far inside the slack.
_SLACK = 0.01


class ChainSampler:
    """A sampler that can say what it draws from.

    `distribution(logits, state)` is the candidate set its call draws from (after every
    filter; `.probs()` normalises the weights), and `sampler(logits, state)` is one
    draw from it. Speculative decoding needs the first to accept drafted tokens without
    changing what the output is distributed as. A custom sampler gets the same treatment
    by having a `distribution` method of this shape.
    """

    def __init__(self, distribution: Callable[[np.ndarray, SamplingState], Candidates], name: str):
        self.distribution = distribution
        self.name = name

    def __call__(self, logits: np.ndarray, state: SamplingState) -> int:
        c = self.distribution(logits, state)
        return int(c.ids[_draw(c.weights, state.rng)])

    def __repr__(self) -> str:
        return f"<sampler {self.name}>"


class _Greedy(ChainSampler):
    """The most likely token (ties: the lowest id, as llama.cpp's greedy sampler)."""

    def __init__(self):
        super().__init__(_point_mass, "greedy")

    def __call__(self, logits: np.ndarray, state: SamplingState) -> int:
        return best_token(logits)


def _point_mass(logits: np.ndarray, state: SamplingState) -> Candidates:
    return Candidates(np.array([best_token(logits)]), np.ones(1, dtype=np.float32), logits)


greedy = _Greedy()


def make_sampler(
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    *,
    typical_p: float = 1.0,
    top_n_sigma: float = 0.0,
    xtc_threshold: float = 0.1,
    xtc_probability: float = 0.0,
    mirostat: int = 0,
    mirostat_tau: float = 5.0,
    mirostat_eta: float = 0.1,
) -> Sampler:
    """The built-in chain (see the module docstring for its order), from llama-server's settings.

    temperature == 0 (or top_p == 0) is greedy, whatever else is set. Off: top_k 0, top_p 1,
    min_p 0, typical_p 1, top_n_sigma <= 0 (llama.cpp's default is -1),
    xtc_probability 0 or xtc_threshold > 0.5. mirostat=2 returns Mirostat 2.0
    (tau: target surprise in bits, eta: learning rate) and ignores the other
    filters, as llama.cpp does; it keeps state, which is why every call returns
    a new sampler: build one per request (GenerationParams does).
    The random draws use `state.rng`, so a seeded generator gives reproducible text.
    """
    arguments = dict(locals())  # each argument is a row of the one table (sampling.params)
    for name, value in arguments.items():
        SETTINGS_BY_NAME[name].check(value)
    if top_p == 0:
        return greedy  # the smallest nucleus: the single most likely token
    if mirostat:
        sampler = make_mirostat_v2(mirostat_tau, mirostat_eta, temperature)  # validates tau and eta
        return greedy if temperature < MIN_TEMPERATURE else sampler
    if temperature < MIN_TEMPERATURE or top_k == 1:
        return greedy
    if typical_p < 1.0 or top_n_sigma > 0.0 or (xtc_probability > 0.0 and xtc_threshold <= 0.5):
        return _filter_chain(temperature, top_k, top_p, min_p, typical_p, top_n_sigma, xtc_threshold, xtc_probability)
    return _fused(temperature, top_k, top_p, min_p)


def _filter_chain(
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
    top_n_sigma: float = 0.0,
    xtc_threshold: float = 0.1,
    xtc_probability: float = 0.0,
) -> Sampler:
    """The chain on one candidate set. Top-n-sigma, top-k and (where nothing that weighs the
    whole set comes first) min-p keep the best tokens down to a bound, so they also tighten
    the cut; the filters then decide exactly.

    With XTC on, the set itself is random (XTC throws a coin per step), so such a sampler
    has no `distribution`: a plain function."""
    floor = _floor(top_p, min_p, typical_p)

    def cut(logits: np.ndarray, state: SamplingState) -> Candidates:
        cut = floor
        if top_n_sigma > 0.0:
            sigma = _finite_std(logits)
            cut = min(cut, top_n_sigma * sigma / temperature + _SLACK)
        ids, weights = _candidates(logits, temperature, cut, top_k)
        c = Candidates(ids, weights, logits)
        if top_n_sigma > 0.0 and ids.size > 1:
            c = c.keep(_top_n_sigma_mask(logits[ids], top_n_sigma, sigma))
        c = apply_typical(c, typical_p)
        c = apply_top_p(c, top_p)
        return apply_min_p(c, min_p)

    if xtc_probability > 0.0 and xtc_threshold <= 0.5:

        def sample(logits: np.ndarray, state: SamplingState) -> int:
            return draw(apply_xtc(cut(logits, state), xtc_threshold, xtc_probability, state.rng), state.rng)

        return sample
    return ChainSampler(
        cut,
        f"chain(temperature={temperature}, top_k={top_k}, top_p={top_p}, min_p={min_p}, "
        f"typical_p={typical_p}, top_n_sigma={top_n_sigma})",
    )


def _fused(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Sampler:
    """temperature -> top-k -> top-p -> min-p -> draw, on bare arrays."""
    floor = _floor(top_p, min_p)

    def cut(logits: np.ndarray, state: SamplingState) -> Candidates:
        ids, weights = _candidates(logits, temperature, floor, top_k)
        if top_p < 1.0 and ids.size > 1:
            ids, weights = _nucleus(ids, weights, top_p)
        if min_p > 0.0 and ids.size > 1:
            kept = _min_p_mask(weights, min_p)
            ids, weights = ids[kept], weights[kept]
        return Candidates(ids, weights, logits)

    return ChainSampler(cut, f"chain(temperature={temperature}, top_k={top_k}, top_p={top_p}, min_p={min_p})")


def _floor(top_p: float, min_p: float, typical_p: float = 1.0) -> float:
    """How far below the best (in scaled logits) the cut may go for this chain."""
    # min-p keeps weights >= min_p (the best weighs 1), i.e. scaled logits >= log(min_p): a tighter
    # cut, unless top-p or typical comes first, which weigh the whole set.
    if min_p > 0.0 and top_p >= 1.0 and typical_p >= 1.0:
        return min(CUTOFF, _SLACK - math.log(min_p))
    return CUTOFF
