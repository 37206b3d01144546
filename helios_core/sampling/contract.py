"""The plug-in shapes of the token loop: what a sampler and a logits processor are, and what they see."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

# A sampler that keeps state across the tokens of one request (mirostat's running
# estimate) must not be shared between requests: the engine calls a factory once
# per request and uses what it returns for that request only.
SamplerFactory = Callable[[], Sampler]
