"""A Messages stream: Anthropic's server-sent events, each an `event:` line and its JSON.

message_start, ping (again every few seconds while a long prompt is read), then per content
block content_block_start, its deltas (thinking_delta and a signature_delta, text_delta,
input_json_delta) and content_block_stop, then message_delta (stop reason, usage) and
message_stop. An error after the stream has started is an `error` event that ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from helios_core.engine import Done
from helios_core.generate import Step, Usage
from helios_http.errors import APIError, engine_error
from helios_http.messages.blocks import MessageBlocks, message_body, message_id, usage_body
from helios_http.messages.errors import error_event
from helios_http.tools import ToolPlan

PING_SECONDS = 5.0  # between pings while the prompt is read


async def stream(pending: asyncio.Future, plan: ToolPlan | None, model: str, n_prompt: int) -> AsyncIterator[bytes]:
    """The events of one answer. pending: generation.submit's task, which may still be reading the prompt
    (pings go out every PING_SECONDS until it has produced something); n_prompt: the prompt's tokens, which
    message_start reports as input (which of them the cache held is known at the end: message_delta says)."""
    start = message_body(message_id(), model, None, Usage(prompt_tokens=n_prompt))
    yield sse({"type": "message_start", "message": start})
    yield sse({"type": "ping"})
    try:
        while not (await asyncio.wait({pending}, timeout=PING_SECONDS))[0]:
            yield sse({"type": "ping"})
        events = pending.result()
    except APIError as error:  # refused once the stream had started (e.g. the server began to shut down)
        yield sse(error_event(error))
        return
    finally:
        pending.cancel()  # the client left while the prompt was read: submit's jobs are cancelled with it
    if events is None:
        return
    blocks = MessageBlocks(plan)
    async with contextlib.aclosing(events):
        async for _, event in events:
            if isinstance(event, Step):
                for settled in blocks.feed(event):
                    yield sse(settled)
            elif isinstance(event, Done):
                if event.error is not None:
                    yield sse(error_event(engine_error(event.error)))
                    return
                for settled in blocks.finish(event):
                    yield sse(settled)
                delta = {"stop_reason": blocks.stop_reason, "stop_sequence": blocks.stop_sequence}
                yield sse({"type": "message_delta", "delta": delta, "usage": usage_body(event.usage)})
                yield sse({"type": "message_stop"})


def sse(data: dict[str, Any]) -> bytes:
    """One event, named by its body's type as Anthropic names them."""
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
