"""The Responses API's events and output items, from scripted engine events (no model, no server).

answer_events is the one path from engine events to a response, streamed or whole: these tests
feed it Steps and a Done as the engine would, and read what a client would receive.
"""

from __future__ import annotations

import asyncio
import types

import orjson
import pytest

from helios_core.engine import Done
from helios_core.sequence import Step, Usage
from helios_http.errors import APIError
from helios_http.responses_request import parse_responses
from helios_http.responses_stream import answer_events, sse

STATE = types.SimpleNamespace(model_id="m", model=None)  # a vocabulary is only read for logprobs
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def run(engine_events: list, body: dict | None = None) -> tuple[list[dict], list[dict]]:
    """The events a client receives (as parsed from the SSE bytes), and what on_final was given."""
    request = parse_responses(body or {"input": "Hi"}, [])
    finals: list[dict] = []

    async def events():
        for event in engine_events:
            yield 0, event

    async def collect():
        frames = [frame async for frame in sse(answer_events(STATE, request, events(), "resp_1", finals.append))]
        return [orjson.loads(frame.split(b"\ndata: ", 1)[1]) for frame in frames]

    return asyncio.run(collect()), finals


def usage(prompt=5, cached=0, completion=2) -> Usage:
    return Usage(prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion)


def test_text_comes_in_openai_event_order_with_consecutive_sequence_numbers():
    events, _ = run([Step(1, "Hel"), Step(2, "lo"), Done("stop", usage=usage())])
    assert [e["type"] for e in events] == [*TEXT_EVENTS, "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_the_completed_response_holds_the_text_and_usage_in_responses_names():
    events, finals = run([Step(1, "Hel"), Step(2, "lo"), Done("stop", usage=usage(prompt=5, cached=3))])
    response = events[-1]["response"]
    assert response == finals[0]
    assert response["status"] == "completed" and response["id"] == "resp_1"
    (message,) = response["output"]
    assert message["type"] == "message" and message["status"] == "completed"
    assert message["content"][0]["text"] == "Hello"
    assert response["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }


def test_every_event_of_an_item_names_its_output_index_and_id():
    events, _ = run([Step(1, "Hi"), Done("stop", usage=usage())])
    item_id = events[-1]["response"]["output"][0]["id"]
    for event in events[2:-1]:
        assert event["output_index"] == 0
        assert event.get("item_id", event.get("item", {}).get("id")) == item_id


def test_reaching_max_output_tokens_is_an_incomplete_response():
    events, _ = run([Step(1, "Hi"), Done("length", usage=usage())], {"input": "Hi", "max_output_tokens": 1})
    assert events[-1]["type"] == "response.incomplete"
    response = events[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_an_error_after_the_stream_started_is_an_error_event_then_a_failed_response():
    events, finals = run([Step(1, "Hi"), Done(None, error=RuntimeError("decode failed"))])
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert "decode failed" in events[-2]["message"] and events[-2]["code"] == "server_error"
    assert finals[0]["status"] == "failed" and "decode failed" in finals[0]["error"]["message"]


def test_an_answer_without_text_still_has_its_empty_message():
    events, _ = run([Done("stop", usage=usage(completion=0))])
    (message,) = events[-1]["response"]["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == ""


def test_the_response_echoes_the_request_parameters():
    body = {"input": "Hi", "instructions": "Be brief", "metadata": {"k": "v"}, "temperature": 0.5, "user": "u"}
    events, _ = run([Done("stop", usage=usage())], body)
    response = events[-1]["response"]
    assert (response["instructions"], response["metadata"], response["temperature"], response["user"]) == (
        "Be brief",
        {"k": "v"},
        0.5,
        "u",
    )
    assert response["text"] == {"format": {"type": "text"}, "verbosity": "medium"} and response["store"] is True


def test_an_error_in_a_whole_response_raises_its_status_instead():
    request = parse_responses({"input": "Hi"}, [])

    async def events():
        yield 0, Done(None, error=RuntimeError("decode failed"))

    async def drain():
        return [e async for e in answer_events(STATE, request, events(), "resp_1", lambda _: None, streamed=False)]

    with pytest.raises(APIError) as raised:
        asyncio.run(drain())
    assert raised.value.status == 500 and "decode failed" in raised.value.message


def test_a_reasoning_field_that_is_no_object_is_a_400_naming_it():
    with pytest.raises(APIError) as raised:
        parse_responses({"input": "Hi", "reasoning": "high"}, [])
    assert raised.value.param == "reasoning"
