"""A response's life as OpenAI's semantic events, from the engine's events; and those events as SSE.

`answer_events` is the one path from engine events to a response: a stream sends every event
it yields (`sse` numbers them and writes `event:` lines), a whole response keeps the last one's
`response`. The sequence is

    response.created, response.in_progress, the output's events (responses_output.py),
    then response.completed, response.incomplete (max_output_tokens reached) or response.failed.

An error after the stream has started is an `error` event followed by `response.failed`: the
client learns why, the connection ends cleanly, and the server keeps serving.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from helios_core.engine import Done
from helios_core.scoring import Scored
from helios_http import responses_shapes, shapes
from helios_http.errors import engine_error
from helios_http.responses_output import Event, OutputBuilder
from helios_http.responses_request import ResponsesRequest
from helios_http.state import ServerState

FINAL = ("response.completed", "response.incomplete", "response.failed")


async def answer_events(
    state: ServerState,
    request: ResponsesRequest,
    events: AsyncIterator,
    response_id: str,
    on_final: Callable[[dict[str, Any]], None],
    *,
    streamed: bool = True,
) -> AsyncIterator[Event]:
    """The events of one response; on_final(response) is called once with the finished response object.

    streamed False (a whole response): an engine error raises its APIError (500, or 503 at shutdown)
    instead of ending the events with a failed response.
    """
    created = shapes.now()

    def body(status: str, **fields: Any) -> dict[str, Any]:
        return responses_shapes.response_body(
            response_id, created, state.model_id, request.echo, status=status, **fields
        )

    builder = OutputBuilder(request.chat.tool_plan, state.model.vocab if request.logprobs else None)
    tally = shapes.UsageTally(1, reasoning=request.chat.sampling.reasoning is not None)
    yield {"type": "response.created", "response": body("in_progress")}
    yield {"type": "response.in_progress", "response": body("in_progress")}
    async with contextlib.aclosing(events):
        async for _, event in events:
            if isinstance(event, Scored):
                continue
            if not isinstance(event, Done):
                for out in builder.step(event):
                    yield out
                continue
            if event.error is not None:
                error = engine_error(event.error)
                if not streamed:
                    raise error
                yield {"type": "error", "code": error.code or error.type, "message": error.message, "param": None}
                final = body("failed", output=builder.output, error=responses_shapes.failure(error.message))
            else:
                tally.add(0, event.usage, event.timings)
                for out in builder.finish(event.finish_reason):
                    yield out
                status = "incomplete" if event.finish_reason == "length" else "completed"
                final = body(status, output=builder.output, usage=responses_shapes.usage_body(tally.body()))
            on_final(final)
            yield {"type": f"response.{final['status']}", "response": final}
            return


async def sse(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    """Server-sent events with `event:` lines and a sequence_number on every event, as OpenAI sends them."""
    number = 0
    async with contextlib.aclosing(events):
        async for event in events:
            event["sequence_number"] = number
            number += 1
            yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
