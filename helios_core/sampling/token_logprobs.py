"""Log-probabilities of a chosen token and its best alternatives, over the whole vocabulary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# What a token with no probability at all reports (vLLM's value): JSON cannot say -inf.
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float


def logprobs(
    logits: np.ndarray, token: int, top_n: int = 0, *, normalise: bool = True
) -> tuple[float, list[TokenLogprob]]:
    """log-softmax of `token`, and the `top_n` most likely tokens with theirs (normalise=False: the logits).

    A row may hold -inf (a processed row's banned tokens): those are never listed as
    alternatives, and a chosen one reports LOGPROB_FLOOR, as vLLM does, since JSON has
    no infinity. Costs one pass of exp over the vocabulary, so the loop calls it only when asked.
    """
    log_total = 0.0
    if normalise:
        top = float(logits.max())
        log_total = top + math.log(float(np.exp(logits - top, dtype=np.float32).sum(dtype=np.float64)))
    chosen = max(float(logits[token]) - log_total, LOGPROB_FLOOR)
    if top_n <= 0:
        return chosen, []
    best = np.argpartition(logits, logits.size - top_n)[logits.size - top_n :]
    best = best[np.argsort(logits[best])[::-1]]
    return chosen, [TokenLogprob(int(t), float(logits[t]) - log_total) for t in best if logits[t] > -np.inf]
