"""Built-in logits processors that act by token id (repetition, presence/frequency, bias), and running a list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from helios_core.sampling.contract import LogitsProcessor, SamplingState


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


def make_presence_frequency_penalty(
    presence: float = 0.0, frequency: float = 0.0, context_size: int | None = None
) -> LogitsProcessor:
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


def make_token_ban(tokens: Sequence[int], until_step: int | None = None) -> LogitsProcessor:
    """Send `tokens` to -inf (for the first `until_step` generated tokens, or always when None).

    What min_tokens and ignore_eos do with end-of-generation tokens.
    """
    ids = np.unique(np.asarray(tokens, dtype=np.int64))

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        if ids.size == 0 or (until_step is not None and state.step >= until_step):
            return logits
        out = logits.copy()
        out[ids] = -np.inf
        return out

    return process


def make_logits_processors(
    *,
    repetition_penalty: float = 1.0,
    repetition_context: int = 64,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: Mapping[int, float] | None = None,
) -> list[LogitsProcessor]:
    """The built-in processors a request asked for, in llama.cpp's order (penalties, then bias)."""
    processors: list[LogitsProcessor] = []
    if repetition_penalty != 1.0:
        processors.append(make_repetition_penalty(repetition_penalty, repetition_context))
    if presence_penalty or frequency_penalty:
        processors.append(make_presence_frequency_penalty(presence_penalty, frequency_penalty))
    if logit_bias:
        processors.append(make_logit_bias(logit_bias))
    return processors


def apply_processors(logits: np.ndarray, processors: Sequence[LogitsProcessor], state: SamplingState) -> np.ndarray:
    for process in processors:
        logits = process(logits, state)
    return logits
