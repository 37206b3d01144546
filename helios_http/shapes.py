"""OpenAI response bodies and stream chunks, built from engine results.

Plain dicts, encoded by orjson. Field names and order follow OpenAI's API
reference so unchanged clients (the openai SDK above all) parse them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from helios_core.generate import Step, Timings, Usage
from helios_core.scoring import Scored
from helios_core.vocab import Vocab
from helios_http import reasoning_fields


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


@dataclass
class Choice:
    """What one choice accumulates for a non-streamed response."""

    index: int
    text: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    finish_reason: str | None = None
    echo: str = ""  # completions' echo: the prompt text the choice starts with
    prompt_scores: Scored | None = None  # ... and its logprobs, when asked for
    tool_calls: list[dict] | None = None  # chat: the calls read from the text (which is then the content)
    reasoning: list[str] = field(default_factory=list)  # chat: the reasoning section's text, apart from the content


def usage_body(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int, reasoning_tokens: int | None = None
) -> dict:
    """OpenAI's usage; reasoning_tokens (a served reasoning model's chat) adds completion_tokens_details."""
    body = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
    if reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return body


class UsageTally:
    """Usage of one HTTP request: each prompt counted once, every choice's completion tokens counted.

    Choice i of prompt p has index p * n + i; a prompt's usage is taken from its first choice.
    reasoning: count reasoning tokens apart (a request read with a reasoning plan).
    """

    def __init__(self, n: int, reasoning: bool = False):
        self.n = n
        self.prompt_usage: dict[int, Usage] = {}
        self.completion_tokens = 0
        self.reasoning_tokens = 0 if reasoning else None
        self.timings: list[dict] = []

    def add(self, index: int, usage: Usage | None, timings: Timings | None = None) -> dict | None:
        """Count a finished choice; returns its `timings` body (None without usage or timings)."""
        if usage is None:
            return None
        self.completion_tokens += usage.completion_tokens
        if self.reasoning_tokens is not None:
            self.reasoning_tokens += usage.reasoning_tokens
        if index % self.n == 0:
            self.prompt_usage[index] = usage
        if timings is None:
            return None
        self.timings.append(timings_body(usage, timings, prompt=index % self.n == 0))
        return self.timings[-1]

    def timings_body(self) -> dict:
        """The request's `timings`: tokens and drafts summed over its choices, milliseconds of the longest."""
        total = {key: sum(t[key] for t in self.timings) for key in _TIMINGS_COUNTS}
        total["prompt_ms"] = max((t["prompt_ms"] for t in self.timings), default=0.0)
        total["predicted_ms"] = max((t["predicted_ms"] for t in self.timings), default=0.0)
        return total

    def body(self) -> dict:
        usages = self.prompt_usage.values()
        return usage_body(
            sum(u.prompt_tokens for u in usages),
            self.completion_tokens,
            sum(u.cached_tokens for u in usages),
            self.reasoning_tokens,
        )


_TIMINGS_COUNTS = ("prompt_n", "predicted_n", "draft_n", "draft_n_accepted")


def timings_body(usage: Usage, timings: Timings, prompt: bool = True) -> dict:
    """llama-server's `timings` of one generation: prompt tokens read (not cached) and generated, in how many
    milliseconds, and speculative decoding's drafted and accepted tokens. prompt False: a further choice of
    the same prompt, whose prompt is counted with the first."""
    return {
        "prompt_n": usage.prompt_tokens - usage.cached_tokens if prompt else 0,
        "prompt_ms": round(timings.prompt_ms, 3),
        "predicted_n": usage.completion_tokens,
        "predicted_ms": round(timings.generation_ms, 3),
        "draft_n": timings.draft_tokens,
        "draft_n_accepted": timings.draft_accepted,
    }


# --- logprobs ------------------------------------------------------------------------


def _token_entry(vocab: Vocab, token: int, logprob: float) -> dict:
    piece = vocab.token_to_piece(token)
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def chat_logprobs(vocab: Vocab, steps: list[Step]) -> dict:
    """Chat's logprobs; the tokens of a reasoning section go to `reasoning_content` beside `content`."""
    content, reasoning = [], []
    for step in steps:
        entry = _token_entry(vocab, step.token, step.logprob)
        entry["top_logprobs"] = [_token_entry(vocab, alt.token, alt.logprob) for alt in step.top_logprobs]
        (reasoning if step.thinking else content).append(entry)
    return {"content": content, **({"reasoning_content": reasoning} if reasoning else {}), "refusal": None}


def completion_logprobs(vocab: Vocab, steps: list[Step], offset: int = 0, prompt: Scored | None = None) -> dict:
    """The legacy shape: token texts, their logprobs, {text: logprob} of the alternatives, text offsets.

    As OpenAI's legacy API, each top_logprobs entry holds the N best tokens and the chosen one,
    so up to N + 1. `prompt`: an echoed prompt's scores, which come first; its first token has
    no logprob (null). Offsets count from `offset` in the choice's text.
    """
    tokens, token_logprobs, top, offsets = [], [], [], []

    def add(token: int, logprob: float | None, alternatives: dict | None) -> None:
        nonlocal offset
        text = _piece(vocab, token)
        if alternatives is not None:
            alternatives.setdefault(text, logprob)
        tokens.append(text)
        token_logprobs.append(logprob)
        top.append(alternatives)
        offsets.append(offset)
        offset += len(text)

    if prompt is not None:
        add(int(prompt.tokens[0]), None, None)
        for token, logprob, best, best_logprobs in zip(
            prompt.tokens[1:].tolist(),
            prompt.logprobs.tolist(),
            prompt.top_tokens.tolist(),
            prompt.top_logprobs.tolist(),
            strict=True,
        ):
            add(token, logprob, {_piece(vocab, t): lp for t, lp in zip(best, best_logprobs, strict=True)})
    for step in steps:
        add(step.token, step.logprob, {_piece(vocab, a.token): a.logprob for a in step.top_logprobs})
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def _piece(vocab: Vocab, token: int) -> str:
    return vocab.token_to_piece(token).decode("utf-8", errors="replace")


# --- bodies ----------------------------------------------------------------------------


def envelope(id_: str, obj: str, created: int, model: str, choices: list[dict], **extra) -> dict:
    """What every response and chunk shares; `extra` adds `usage`."""
    return {
        "id": id_,
        "object": obj,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        **extra,
    }


def chat_response(
    id_: str, model: str, choices: list[Choice], usage: dict, vocab: Vocab, logprobs: bool, timings: dict | None = None
) -> dict:
    return envelope(
        id_,
        "chat.completion",
        now(),
        model,
        [
            {
                "index": c.index,
                "message": chat_message(c),
                "logprobs": chat_logprobs(vocab, c.steps) if logprobs else None,
                "finish_reason": c.finish_reason,
            }
            for c in choices
        ],
        usage=usage,
        **({"timings": timings} if timings is not None else {}),
    )


def chat_message(choice: Choice) -> dict:
    """The assistant's message: its text, or with tool calls its content (null when there is none) and the calls;
    with reasoning, reasoning_content and reasoning beside them."""
    text = "".join(choice.text)
    thought = reasoning_fields.fields("".join(choice.reasoning))
    if not choice.tool_calls:
        return {"role": "assistant", "content": text, **thought, "refusal": None}
    return {"role": "assistant", "content": text or None, **thought, "refusal": None, "tool_calls": choice.tool_calls}


def completion_response(
    id_: str, model: str, choices: list[Choice], usage: dict, vocab: Vocab, logprobs: bool, timings: dict | None = None
) -> dict:
    return envelope(
        id_,
        "text_completion",
        now(),
        model,
        [
            {
                "index": c.index,
                "text": c.echo + "".join(c.text),
                "logprobs": completion_logprobs(vocab, c.steps, prompt=c.prompt_scores) if logprobs else None,
                "finish_reason": c.finish_reason,
            }
            for c in choices
        ],
        usage=usage,
        **({"timings": timings} if timings is not None else {}),
    )


def chunk_choice(
    chat: bool, index: int, text: str | None, finish_reason: str | None = None, logprobs: dict | None = None
) -> dict:
    """One choice of a stream chunk. Chat: text None is the role chunk, "" with a finish the closing delta."""
    if not chat:
        return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
    if text is None:
        delta = {"role": "assistant", "content": ""}
    else:
        delta = {"content": text} if text or finish_reason is None else {}
    return delta_choice(index, delta, finish_reason, logprobs)


def delta_choice(index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
    """One choice of a chat stream chunk with the given delta (content, tool_calls, or {} to close)."""
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
