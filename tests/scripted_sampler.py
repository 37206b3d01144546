"""A plug-in sampler with scripted output, for server tests that need exact text from a base model.

    helios-engine serve --sampler script=tests.scripted_sampler:script

A request with {"sampler": "script", "sampler_args": {"text": "..."}} generates the tokens of
`text`, then the end-of-generation token: the model's logits are never read.
"""

from __future__ import annotations

import time

from helios_core.sampling import Sampler


def script(model, text: str, delay: float = 0.0) -> Sampler:
    """A sampler factory: `text`'s tokens one per step, then eos; `delay` seconds before the first
    (the engine thread waits: a stand-in for a prompt that takes long to read)."""
    tokens = model.vocab.tokenize(text, add_special=False) + [model.vocab.eos]

    def sample(logits, state) -> int:
        if state.step == 0 and delay:
            time.sleep(delay)
        return tokens[min(state.step, len(tokens) - 1)]

    return sample
