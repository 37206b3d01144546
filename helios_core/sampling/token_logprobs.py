"""Log-probabilities of a chosen token and its best alternatives, over the whole vocabulary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
