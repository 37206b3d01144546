"""Server-sent events for chat and completions: a chunk per token, a finish chunk per choice, usage, [DONE]."""

from __future__ import annotations

import contextlib

import orjson

from helios_core.engine import Done
from helios_core.scoring import Scored
from helios_http import reasoning_fields, shapes, tools
from helios_http.errors import engine_error
from helios_http.schemas import ChatRequest, CompletionRequest
from helios_http.state import ServerState


def _sse(body: dict) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


_DONE = b"data: [DONE]\n\n"


async def stream(state: ServerState, parsed: ChatRequest | CompletionRequest, events, kind: str, echo_of=None):
    """SSE for chat and completions: chunks per token, a finish chunk per choice, usage, [DONE].

    With echo, each choice's first chunk is its prompt (with the prompt's logprobs when asked for,
    so it comes once they are computed). An error in the middle ends the stream with an error
    event and [DONE].
    """
    chat = kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"
    id_, created, model_id = shapes.new_id("chatcmpl" if chat else "cmpl"), shapes.now(), state.model_id
    usage_field = {"usage": None} if parsed.include_usage else {}
    vocab, logprobs_wanted = state.model.vocab, parsed.sampling.logprobs
    tally = shapes.UsageTally(parsed.n, reasoning=chat and parsed.sampling.reasoning is not None)
    offsets: dict[int, int] = {}  # completions' text_offset per choice

    def chunk(choice: dict) -> bytes:
        return _sse(shapes.envelope(id_, obj, created, model_id, [choice], **usage_field))

    plan = parsed.tool_plan if chat else None
    if chat and plan is None:
        for index in range(parsed.n):
            yield chunk(shapes.chunk_choice(True, index, None))
    elif echo_of and not logprobs_wanted:
        for index in range(len(parsed.prompts) * parsed.n):
            offsets[index] = len(echo_of(index))
            yield chunk(shapes.chunk_choice(False, index, echo_of(index)))
    tool_deltas = _ToolDeltas(plan, parsed.n, vocab if logprobs_wanted else None) if plan else None
    async with contextlib.aclosing(events):
        async for index, event in events:
            if isinstance(event, Done) and event.error is not None:
                yield _sse(engine_error(event.error).body())
                yield _DONE
                return
            timings = tally.add(index, event.usage, event.timings) if isinstance(event, Done) else None
            if tool_deltas is not None:
                for choice in tool_deltas.choices(index, event):
                    yield chunk(choice)
                continue
            if isinstance(event, Scored):  # only asked for with echo and logprobs
                text = echo_of(index)
                offsets[index] = len(text)
                logprobs = shapes.completion_logprobs(vocab, [], prompt=event)
                yield chunk(shapes.chunk_choice(False, index, text, logprobs=logprobs))
                continue
            if isinstance(event, Done):  # the choice's last chunk carries its timings, as llama-server's does
                closing = shapes.chunk_choice(chat, index, "", event.finish_reason)
                extra = {} if timings is None else {"timings": timings}
                yield _sse(shapes.envelope(id_, obj, created, model_id, [closing], **usage_field, **extra))
                continue
            logprobs = None
            if logprobs_wanted and chat:
                logprobs = shapes.chat_logprobs(vocab, [event])
            elif logprobs_wanted:
                logprobs = shapes.completion_logprobs(vocab, [event], offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + len(event.text)
            if event.reasoning:  # a step's reasoning comes before its answer text (the step that ends the section)
                yield chunk(shapes.delta_choice(index, reasoning_fields.fields(event.reasoning), logprobs=logprobs))
                logprobs = None
            if event.text or logprobs:
                yield chunk(shapes.chunk_choice(chat, index, event.text, logprobs=logprobs))
    if parsed.include_usage:
        yield _sse(shapes.envelope(id_, obj, created, model_id, [], usage=tally.body()))
    yield _DONE


class _ToolDeltas:
    """Chat choices of a request whose answers are read for tool calls (tools.ToolPlan), as chunk choices.

    A choice's role rides on its first delta, so that it can say what OpenAI's says: content
    null when the answer opens with calls. Logprobs ride on the first chunk of their step.
    """

    def __init__(self, plan: tools.ToolPlan, n: int, vocab=None):
        self._followers = {index: tools.CallFollower(plan) for index in range(n)}
        self._opened: set[int] = set()
        self._vocab = vocab  # set when logprobs are wanted

    def choices(self, index: int, event) -> list[dict]:
        follower = self._followers[index]
        if isinstance(event, Done):
            out = self._with_role(index, follower.finish(), closing=True)
            out.append(shapes.delta_choice(index, {}, follower.finish_reason(event.finish_reason)))
            return out
        logprobs = shapes.chat_logprobs(self._vocab, [event]) if self._vocab is not None else None
        # Reasoning is never read for calls: a call written while thinking is part of the thought.
        thought = [reasoning_fields.fields(event.reasoning)] if event.reasoning else []
        out = self._with_role(index, thought + follower.feed(event))
        if logprobs is not None:
            if out:
                out[0]["logprobs"] = logprobs
            else:
                out.append(shapes.delta_choice(index, {}, logprobs=logprobs))
        return out

    def _with_role(self, index: int, deltas: list[dict], closing: bool = False) -> list[dict]:
        out = [shapes.delta_choice(index, delta) for delta in deltas]
        if index in self._opened or not (deltas or closing):
            return out
        self._opened.add(index)
        if deltas:  # the first delta carries the role, as OpenAI's does
            out[0]["delta"] = {"role": "assistant", "content": None, **deltas[0]}
        else:
            out.append(shapes.delta_choice(index, {"role": "assistant", "content": ""}))
        return out
