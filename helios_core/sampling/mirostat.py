"""Mirostat 2.0: a sampler that steers the surprise of each token towards a target, with state per request."""

from __future__ import annotations

import math

import numpy as np

from helios_core.sampling.contract import SamplingState
from helios_core.sampling.cut import _draw, candidates


class MirostatV2:
    """Mirostat 2.0 (Basu et al. 2021), as llama.cpp's mirostat-v2 sampler.

    Each step keeps the tokens whose surprise -log2(p) is at most `mu` (at
    least the most likely one), draws among them renormalised, and moves `mu`
    by eta times the gap between the drawn token's surprise (in the
    renormalised set) and tau. `mu` starts at 2 * tau.

    `mu` is the state of one request: use one instance per request, never
    share one between requests (make_mirostat_v2 makes a fresh one per call).
    """

    def __init__(self, tau: float = 5.0, eta: float = 0.1, temperature: float = 1.0):
        if not tau >= 0 or not math.isfinite(tau):
            raise ValueError(f"mirostat_tau must be >= 0 (a target surprise in bits), got {tau}")
        if not eta >= 0 or not math.isfinite(eta):
            raise ValueError(f"mirostat_eta must be >= 0 (a learning rate), got {eta}")
        if not temperature >= 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.tau = tau
        self.eta = eta
        self.temperature = temperature
        self.mu = 2.0 * tau

    def __call__(self, logits: np.ndarray, state: SamplingState) -> int:
        c = candidates(logits, self.temperature)  # llama.cpp tempers before mirostat too
        weights = c.weights
        # Surprise -log2(w / total) <= mu  <=>  w >= total * 2^-mu: a threshold, so no sort.
        kept = np.flatnonzero(weights >= weights.sum(dtype=np.float64) * 2.0 ** min(-self.mu, 1000.0))
        if kept.size == 0:
            kept = np.array([int(np.argmax(weights))])
        ids, weights = c.ids[kept], weights[kept]
        i = _draw(weights, state.rng)
        surprise = -math.log2(float(weights[i]) / float(weights.sum(dtype=np.float64)))
        self.mu -= self.eta * (surprise - self.tau)
        return int(ids[i])


def make_mirostat_v2(tau: float = 5.0, eta: float = 0.1, temperature: float = 1.0) -> MirostatV2:
    """A new Mirostat 2.0 sampler with its own running `mu`: call once per request.

    A factory for one request's sampler, not a shared sampler: the engine calls
    the factory for each request (`functools.partial(make_mirostat_v2, tau, eta)`
    is one), so concurrent requests never steer each other's `mu`.
    tau: target surprise in bits per token (llama.cpp's default 5). eta: learning rate (0.1).
    """
    return MirostatV2(tau, eta, temperature)
