"""The handlers: POST /v1/messages and POST /v1/messages/count_tokens.

A body becomes a ChatRequest (request.py) and runs as chat completions run: rendered through the
chat template with its tools (chat_api.chat_prompt), queued by generation.submit. Only the answer
is Anthropic's: a Message (blocks.py) or its events (stream.py).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from helios_core.engine import Done
from helios_core.generate import Step
from helios_http.chat_api import chat_prompt, render_chat
from helios_http.errors import CLIENT_CLOSED_REQUEST, engine_error
from helios_http.generation import submit
from helios_http.lora_api import model_ids
from helios_http.messages.blocks import MessageBlocks, message_body, message_id
from helios_http.messages.request import MessagesRequest, parse_messages
from helios_http.messages.stream import stream
from helios_http.responses import json_response
from helios_http.schemas import parse_json
from helios_http.state import ServerState

# How long a stream waits for its first event before it starts (and pings until that event comes).
FIRST_EVENT_WAIT_SECONDS = 1.0


async def messages(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    parsed = await _parsed(request, state)
    engine, prompt = await chat_prompt(state, parsed.chat)
    # A Message names the model the client asked for, as Anthropic's do; the log says which one served it.
    model = parsed.model or state.model_id
    if parsed.chat.stream:
        return await _streamed(request, state, engine, parsed, prompt, model)
    events = await submit(request, state, engine, parsed.chat, [prompt], "messages")
    if events is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # the client left before anything was produced
    blocks, done = MessageBlocks(parsed.chat.tool_plan), None
    async with contextlib.aclosing(events):
        async for _, event in events:
            if isinstance(event, Step):
                blocks.feed(event)
            elif isinstance(event, Done):
                if event.error is not None:
                    raise engine_error(event.error)
                blocks.finish(event)
                done = event
    return json_response(message_body(message_id(), model, blocks, done.usage if done else None))


async def count_tokens(request: Request) -> Response:
    """{"input_tokens": N}: the prompt's tokens as a Messages request with this body would read them."""
    state: ServerState = request.app.state.helios
    parsed = await _parsed(request, state, count_only=True)
    model, engine = state.ready_engine()
    prompt = await run_in_threadpool(
        render_chat, model, engine, state.chat_template, parsed.chat, state.reasoning, state.reasoning_budget
    )
    return json_response({"input_tokens": len(prompt)})


async def _streamed(request, state, engine, parsed: MessagesRequest, prompt: list[int], model: str) -> Response:
    """Refusals (a full queue, a prompt too long) come at once and stay statuses. A long prompt takes minutes
    to read on a CPU: its stream starts meanwhile and pings, for clients that give up on a silent connection
    (the anthropic SDKs' read timeout, byte watchdogs, proxies). Claude Code's own watchdog counts events and
    skips pings: it needs CLAUDE_STREAM_IDLE_TIMEOUT_MS above its 300 s for such prompts (docs/messages.md)."""
    pending = asyncio.ensure_future(submit(request, state, engine, parsed.chat, [prompt], "messages"))
    try:
        await asyncio.wait({pending}, timeout=FIRST_EVENT_WAIT_SECONDS)
    except asyncio.CancelledError:
        pending.cancel()
        raise
    if pending.done() and pending.result() is None:  # result() raises the refusals
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return StreamingResponse(
        stream(pending, parsed.chat.tool_plan, model, len(prompt)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _parsed(request: Request, state: ServerState, count_only: bool = False) -> MessagesRequest:
    body = parse_json(await request.body())
    served = state.model_names.resolve(body.get("model"), model_ids(state))
    return parse_messages(body, served, count_only=count_only)
