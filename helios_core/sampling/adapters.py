"""Processors written for other libraries' calling conventions, as helios LogitsProcessors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from helios_core.sampling.contract import LogitsProcessor, SamplingState


def from_numpy_processor(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> LogitsProcessor:
    """A processor in the `(input_ids, scores)` NumPy convention (llama-cpp-python's LogitsProcessor).

    `fn` gets the history (prompt and generated tokens, int32, read-only) and
    a writable float32 copy of the logits row, shape (n_vocab,), and returns
    the new scores; it may change its `scores` argument and return it.
    """

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        input_ids = state.tokens.view()
        input_ids.flags.writeable = False
        out = np.asarray(fn(input_ids, logits.copy()), dtype=np.float32)
        if out.shape != logits.shape:
            raise ValueError(f"the processor returned scores of shape {out.shape}, expected {logits.shape}")
        return out

    return process


def from_transformers(processor: Any) -> LogitsProcessor:
    """A transformers LogitsProcessor (or warper) as a helios processor. Needs PyTorch.

    transformers' processors take `input_ids` as an int64 tensor of shape
    (batch, sequence) and `scores` as a float tensor of shape (batch, vocab),
    and fail on NumPy arrays. This gives them the request as a batch of one
    (the history, prompt included, and a float32 copy of the row) and returns
    row 0 of their answer as float32 NumPy. Warpers that filter by setting
    scores to -inf (top-p, typical) work as processors: the sampler never
    draws a -inf token. torch is imported here, not by helios: it is not a
    dependency, and this raises ImportError saying so when it is missing.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "from_transformers needs PyTorch, which helios-engine does not depend on: "
            "install torch to use transformers' processors"
        ) from error

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        input_ids = torch.from_numpy(state.tokens.astype(np.int64))[None, :]
        scores = torch.from_numpy(logits.copy())[None, :]  # a copy: some processors write in place
        out = processor(input_ids, scores)
        return out[0].detach().to(device="cpu", dtype=torch.float32).numpy()

    return process
