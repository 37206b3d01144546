"""A plug-in sampler that writes a scripted text, for driving the real server without a model that obeys.

    helios-engine serve --sampler script=tests.scripted_sampler:scripted

A request's `sampler_args` give the `text` (tokenized with the served vocabulary, special tokens parsed)
and what follows it: `then` "eos" (an end-of-generation token) or "greedy" (the most likely token of the
row the processors left, so a constraint decides). Tokens the engine writes itself (a reasoning budget's
closing text) take no sampler call: the script goes on where it was.
"""

from __future__ import annotations

import numpy as np


def scripted(model, text: str = "", then: str = "eos"):
    if then not in ("eos", "greedy"):
        raise ValueError('then must be "eos" or "greedy"')
    script = model.vocab.tokenize(text, add_special=False, parse_special=True)
    end = model.vocab.eos
    position = 0

    def sample(logits, state) -> int:
        nonlocal position
        position += 1
        if position <= len(script):
            return script[position - 1]
        return int(np.argmax(logits)) if then == "greedy" else end

    return sample
