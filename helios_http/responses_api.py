"""OpenAI's Responses API: POST /v1/responses, its stored responses, and POST /v1/responses/input_tokens.

A thin translator: the body becomes the one ChatRequest (responses_request.py), which is rendered
and queued as chat's is (chat_api.chat_prompt, generation.submit); the engine's events become
output items and semantic events (responses_output.py, responses_stream.py). Answers with
`store` (the default) are kept in ServerState.responses (responses_store.py) for
previous_response_id, GET, DELETE and input_items.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from helios_http.chat_api import chat_prompt, render_chat
from helios_http.errors import CLIENT_CLOSED_REQUEST, APIError, invalid
from helios_http.generation import submit
from helios_http.responses import json_response
from helios_http.responses_items import new_item_id
from helios_http.responses_request import (
    ResponsesRequest,
    in_responses_terms,
    parse_responses,
    previous_id,
)
from helios_http.responses_shapes import page
from helios_http.responses_store import MissingResponse
from helios_http.responses_stream import FINAL, answer_events, sse
from helios_http.schemas import parse_json
from helios_http.state import ServerState

MAX_PAGE = 100


async def create_response(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    parsed = _parse(state, parse_json(await request.body()))
    try:
        engine, prompt = await chat_prompt(state, parsed.chat)
        events = await submit(request, state, engine, parsed.chat, [prompt], "input")
    except APIError as error:
        raise in_responses_terms(error) from None
    if events is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # the client left before anything was produced
    response_id = new_item_id("resp")

    def keep(final: dict[str, Any]) -> None:
        if parsed.store and final["status"] != "failed":
            state.responses.put(final, parsed.items, parsed.previous_response_id)

    answer = answer_events(state, parsed, events, response_id, keep, streamed=parsed.chat.stream)
    if parsed.chat.stream:
        return StreamingResponse(sse(answer), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    async for event in answer:
        if event["type"] in FINAL:
            return json_response(event["response"])
    raise AssertionError("answer_events ends with a final event")


async def count_input_tokens(request: Request) -> Response:
    """POST /v1/responses/input_tokens: the prompt's length for a create body, as llama-server answers it."""
    state: ServerState = request.app.state.helios
    parsed = _parse(state, parse_json(await request.body()))
    model, engine = state.ready_engine()
    try:
        prompt = await run_in_threadpool(
            render_chat, model, engine, state.chat_template, parsed.chat, state.reasoning, state.reasoning_budget
        )
    except APIError as error:
        raise in_responses_terms(error) from None
    return json_response({"object": "response.input_tokens", "input_tokens": len(prompt)})


async def retrieve_response(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    if request.query_params.get("stream") in ("true", "1"):
        raise invalid("stream: a stored response is retrieved whole; replaying its events is not offered", "stream")
    return json_response(_stored(state, request.path_params["response_id"]).response)


async def delete_response(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    response_id = request.path_params["response_id"]
    if not state.responses.delete(response_id):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


async def list_input_items(request: Request) -> Response:
    """GET /v1/responses/{id}/input_items: the items it was answered from, a page at a time, newest first."""
    state: ServerState = request.app.state.helios
    response_id = request.path_params["response_id"]
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid(f'order must be "asc" or "desc"; got {order!r}', "order")
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise invalid(f"limit must be an integer between 1 and {MAX_PAGE}; got {limit!r}", "limit")
    try:
        items = state.responses.input_items(response_id)
    except MissingResponse as missing:
        raise _not_found(missing.args[0]) from None
    if order == "desc":
        items = items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise invalid(f"after: no input item {after!r} in response {response_id!r}", "after")
        items = items[ids.index(after) + 1 :]
    return json_response(page(items[: int(limit)], len(items) > int(limit)))


def _parse(state: ServerState, body: dict[str, Any]) -> ResponsesRequest:
    """The body checked, with the conversation previous_response_id names (a 404 when it is not stored)."""
    previous = previous_id(body)
    try:
        context = state.responses.conversation(previous) if previous is not None else []
    except MissingResponse as missing:
        raise _not_found(missing.args[0], "previous_response_id") from None
    return parse_responses(body, context)


def _stored(state: ServerState, response_id: str):
    try:
        return state.responses.get(response_id)
    except MissingResponse:
        raise _not_found(response_id) from None


def _not_found(response_id: str, param: str | None = None) -> APIError:
    # OpenAI's words and shape; an evicted response is as gone as one never stored.
    return APIError(404, f"Response with id '{response_id}' not found.", param=param)
