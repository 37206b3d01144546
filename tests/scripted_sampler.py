"""A plug-in sampler with scripted output, for server tests that need exact text from a base model.

    helios-engine serve --sampler script=tests.scripted_sampler:script

A request with {"sampler": "script", "sampler_args": {"text": "..."}} generates the tokens of
`text`, then the end-of-generation token: the model's logits are never read.
"""

from __future__ import annotations

from helios_core.sampling import Sampler


def script(model, text: str) -> Sampler:
    """A sampler factory: `text`'s tokens one per step, then eos."""
    tokens = model.vocab.tokenize(text, add_special=False) + [model.vocab.eos]

    def sample(logits, state) -> int:
        return tokens[min(state.step, len(tokens) - 1)]

    return sample
