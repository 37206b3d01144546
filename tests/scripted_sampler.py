"""Plug-in samplers that write a scripted text, for driving the real server without a model that obeys.

    helios-engine serve --sampler script=tests.scripted_sampler:scripted

(`rehearsal`, below, plays an agent's tool call and answer for clients that send no helios field.)

A request's `sampler_args` give the `text` (tokenized with the served vocabulary, special tokens parsed;
a list of strings is tokenized piece by piece, so a test chooses where token boundaries fall)
and what follows it: `then` "eos" (an end-of-generation token) or "greedy" (the most likely token of the
row the processors left, so a constraint decides). Tokens the engine writes itself (a reasoning budget's
closing text) take no sampler call: the script goes on where it was. `delay` seconds pass before the
first token (the engine thread waits: a stand-in for a prompt that takes long to read).
"""

from __future__ import annotations

import json
import time

import numpy as np

from helios_core import tool_calls


def scripted(model, text: str | list[str] = "", then: str = "eos", delay: float = 0.0):
    if then not in ("eos", "greedy"):
        raise ValueError('then must be "eos" or "greedy"')
    pieces = [text] if isinstance(text, str) else text
    script = [t for piece in pieces for t in model.vocab.tokenize(piece, add_special=False, parse_special=True)]
    end = model.vocab.eos
    position = 0

    def sample(logits, state) -> int:
        nonlocal position
        if position == 0 and delay:
            time.sleep(delay)
        position += 1
        if position <= len(script):
            return script[position - 1]
        return int(np.argmax(logits)) if then == "greedy" else end

    return sample


def rehearsal(model, tool: str, arguments: dict, seen: str, answer: str, format: str = "generic"):
    """An agent's two turns, whatever the model says: a call of `tool` with `arguments`, then, once the
    prompt holds `seen` (the tool's output, sent back by the client), `answer`. For real clients that
    send no helios field (`serve --default-plugins`): Claude Code and Codex run a tool through it.

    format: the tool-call format the served template uses (helios_core.tool_calls.FORMATS): "generic"
    for templates without a syntax of their own (the default model's), "qwen3_coder" for Qwen3-Coder's.
    """
    call = tool_calls.written(tool_calls.FORMATS[format], [tool_calls.ToolCall(tool, json.dumps(arguments))])
    script: list[int] = []

    def sample(logits, state) -> int:
        if state.step == 0:
            prompt = model.vocab.detokenize(state.tokens[: state.n_prompt])
            script[:] = model.vocab.tokenize(answer if seen in prompt else call, add_special=False)
        return script[state.step] if state.step < len(script) else model.vocab.eos

    return sample
