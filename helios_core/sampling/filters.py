"""Pure filters on a candidate set: each takes Candidates and returns the tokens it keeps.

Chain them in any order on a set cut once per step:

    c = candidates(logits, temperature=0.8)
    c = apply_top_k(c, 40)
    c = apply_top_p(c, 0.95)
    token = draw(c, state.rng)

Each follows llama.cpp's sampler of the same name
(vendor/llama.cpp/src/llama-sampler.cpp), computed on the probabilities of
the set it is given; a docstring says where one differs. None writes to its
input. The value that turns a filter off (top_k 0, top_p 1, min_p 0,
typical_p 1, top_n_sigma <= 0, xtc probability 0) returns the set unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from helios_core.sampling.cut import MIN_TEMPERATURE, Candidates, _top_k


def apply_temperature(c: Candidates, temperature: float) -> Candidates:
    """Weights raised to 1 / temperature, i.e. the softmax of logits / temperature over the set.

    Tokens the cut dropped stay dropped. A set cut at temperature t holds every
    token within CUTOFF * t logits of the best, so sharpening it (temperature <= 1)
    is exact to float precision; to flatten, cut at the final temperature
    instead: candidates(logits, temperature). Temperature 0 keeps the heaviest token.
    """
    if not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature < MIN_TEMPERATURE:
        return c.keep(np.array([int(np.argmax(c.weights))]))
    if temperature == 1.0:
        return c
    weights = np.power(c.weights, np.float32(1.0 / temperature))
    kept = weights > 0  # sharpening can underflow the lightest to 0: they can no longer be drawn
    if kept.all():
        return c._replace(weights=weights)
    return c._replace(ids=c.ids[kept], weights=weights[kept])


def apply_top_k(c: Candidates, k: int) -> Candidates:
    """The k most likely tokens (0: all of them). Their order in the set is kept."""
    if k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {k}")
    if k == 0 or k >= c.ids.size:
        return c
    ids, weights = _top_k(c.ids, c.weights, k)
    return c._replace(ids=ids, weights=weights)


def apply_top_p(c: Candidates, p: float) -> Candidates:
    """The smallest set of most likely tokens whose probability reaches p (nucleus sampling).

    As llama.cpp: the token at which the running sum first reaches p is kept.
    The result is ordered from the most likely token down.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0 or c.ids.size <= 1:
        return c
    ids, weights = _nucleus(c.ids, c.weights, p)
    return c._replace(ids=ids, weights=weights)


def apply_min_p(c: Candidates, p: float) -> Candidates:
    """The tokens whose probability is at least p times the most likely one's."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {p}")
    if p == 0.0 or c.ids.size <= 1:
        return c
    return c.keep(_min_p_mask(c.weights, p))


def apply_typical(c: Candidates, p: float) -> Candidates:
    """Locally typical sampling (Meister et al. 2022), as llama.cpp's typical sampler.

    With H the entropy of the set's distribution, tokens are ranked by how far
    their surprise -log(prob) lies from H, closest first, and the shortest run
    of that ranking whose probability exceeds p (strictly, as llama.cpp) is kept.
    H is the entropy of the candidate set: the tokens the cut dropped hold
    under 1e-5 of the mass on real rows, so they move H by under 1e-3 nats.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"typical_p must be in (0, 1], got {p}")
    if p >= 1.0 or c.ids.size <= 1:
        return c
    weights = c.weights
    total = float(weights.sum(dtype=np.float64))
    target = p * total
    log_weights = np.log(weights)
    # surprise - H = (log(total) - log w) - (log(total) - E[log w]): the distance of a token's
    # log-weight from the mean log-weight `centre`. No token lies more than D = max - centre
    # above it, so every token more than D below it ranks after all heavier ones, lightest last:
    # once the heavier ones hold no more than p of the mass, the answer is the nucleus (strictly past p).
    centre = float(np.dot(weights, log_weights)) / total
    heavy = np.flatnonzero(log_weights >= np.float32(2.0 * centre - float(log_weights.max())))
    if weights[heavy].sum(dtype=np.float64) <= target:
        ids, weights = _nucleus(c.ids, weights, p, strict=True)
        return c._replace(ids=ids, weights=weights)
    distance = np.abs(log_weights[heavy] - np.float32(centre))
    order = heavy[np.argsort(distance, kind="stable")]
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    return c.keep(np.sort(order[: min(int(np.searchsorted(cumulative, target, side="right")) + 1, order.size)]))


def apply_top_n_sigma(c: Candidates, n: float) -> Candidates:
    """Top-n-sigma (Tang et al. 2024): the tokens whose logit is within n standard deviations of the best.

    As llama.cpp, the standard deviation is over the finite logits of the whole
    row the set was cut from (c.logits), and the best is the best of the set. n <= 0 is off.
    """
    if not math.isfinite(n):
        raise ValueError(f"top_n_sigma must be a finite number (<= 0 = off), got {n}")
    if n <= 0 or c.ids.size <= 1:
        return c
    if c.logits is None:
        raise ValueError("top-n-sigma needs the logits row the candidates were cut from: make them with candidates()")
    return c.keep(_top_n_sigma_mask(c.logits[c.ids], n, _finite_std(c.logits)))


def apply_xtc(c: Candidates, threshold: float, probability: float, rng: np.random.Generator) -> Candidates:
    """Exclude Top Choices: with the given probability, drop every token at or above the
    threshold probability except the least likely of them.

    As llama.cpp's xtc: nothing happens unless at least two tokens reach the
    threshold, and a threshold above 0.5 (which two tokens cannot both reach) is off.
    The coin is tossed with `rng` (the request's generator) once per call whenever
    the filter is on and the set holds two tokens or more, as llama.cpp does.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"xtc_threshold must be in [0, 1], got {threshold}")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"xtc_probability must be in [0, 1], got {probability}")
    if probability <= 0.0 or threshold > 0.5 or c.ids.size < 2:
        return c
    if rng.random() > probability:
        return c
    weights = c.weights
    top = weights >= threshold * weights.sum(dtype=np.float64)
    above = np.flatnonzero(top)
    if above.size < 2:
        return c
    top[above[np.argmin(weights[above])]] = False  # the least likely of the top choices stays
    return c.keep(~top)


# --- kernels ------------------------------------------------------------------------


def _min_p_mask(weights: np.ndarray, p: float) -> np.ndarray:
    return weights >= np.float32(p) * weights.max()


# Each widening of the nucleus search lowers the weight threshold by this factor.
_NUCLEUS_STEP = math.exp(-3.0)


def _nucleus(ids: np.ndarray, weights: np.ndarray, top_p: float, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The smallest set of most likely tokens whose mass reaches top_p (strict: exceeds it).

    Sorting tens of thousands of candidates costs milliseconds, while the
    nucleus is usually a handful. Every token at or above a weight threshold
    is more likely than every token below it, so once the tokens above a
    threshold hold top_p of the mass, the nucleus lies among them: lower the
    threshold until it does (one compare-and-sum pass each), then sort those.
    """
    target = top_p * weights.sum(dtype=np.float64)
    threshold = _NUCLEUS_STEP * weights.max()
    while True:
        inside = (weights >= threshold).nonzero()[0]
        # Weights are finite and positive, so the threshold reaches them all within ~40 rounds.
        mass = weights[inside].sum(dtype=np.float64)
        if mass > target or (mass == target and not strict) or inside.size == weights.size or threshold == 0.0:
            break
        threshold *= _NUCLEUS_STEP
    order = inside[weights[inside].argsort(kind="stable")[::-1]]
    cumulative = weights[order].cumsum(dtype=np.float64)
    end = int(cumulative.searchsorted(target, side="right" if strict else "left")) + 1
    keep = order[: min(end, order.size)]
    return ids[keep], weights[keep]


def _top_n_sigma_mask(set_logits: np.ndarray, n: float, sigma: float) -> np.ndarray:
    top = float(set_logits.max())
    if not math.isfinite(top):  # +inf tokens: they are the whole set already
        return np.ones(set_logits.size, dtype=bool)
    return set_logits >= np.float32(top - n * sigma)


_ONES: dict[int, np.ndarray] = {}


def _finite_std(logits: np.ndarray) -> float:
    """Population standard deviation of the finite entries (llama.cpp's top-n-sigma skips -inf).

    Two BLAS dot products (sum and sum of squares) cost a third of np.std;
    where the mean is large against the spread, which would cost that
    formula its precision, the deviations are summed instead.
    """
    n = logits.size
    ones = _ONES.get(n)
    if ones is None:
        ones = _ONES[n] = np.ones(n, dtype=np.float32)
    total, squares = float(np.dot(logits, ones)), float(np.dot(logits, logits))
    if math.isfinite(total) and math.isfinite(squares):
        mean, mean_square = total / n, squares / n
        variance = mean_square - mean * mean
        if variance > 1e-3 * mean_square:
            return math.sqrt(variance)
        values = logits
    else:
        values = logits[np.isfinite(logits)]
        if values.size == 0:
            return 0.0
        mean = float(values.sum(dtype=np.float64)) / values.size
    centred = values - np.float32(mean)
    return math.sqrt(float(np.dot(centred, centred)) / values.size)
