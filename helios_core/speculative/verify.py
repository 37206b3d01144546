"""Verification: drafted tokens taken by the acceptance rule of speculative sampling, row by row."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from helios_core.sampling.cut import Candidates, draw


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
        return draw(c, rng)
    weights = weights.astype(np.float64)
    if rng.random() * weights.sum() < weights[hit[0]]:
        return drafted
    weights[hit[0]] = 0.0
    return draw(Candidates(ids, weights), rng)


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
