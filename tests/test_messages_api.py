"""Anthropic's Messages API (issue 23 §2) against a real `helios-engine serve`, through the real anthropic SDK.

The default model is a base model that follows no instruction: exact text comes from the scripted
plug-in sampler (tests/scripted_sampler.py, picked by the extension field "sampler", which the
Messages route honours as chat's does), and tool calls from the constraint that tool_choice "any"
puts on the output. One server serves the module, with an API key, so that every request here
also checks x-api-key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest

from helios_core.resolve import default_model_path
from tests.conftest import PATIENCE
from tests.server_process import KEYED

KEY = KEYED[KEYED.index("--api-key") + 1]
MODEL_ID = default_model_path().stem
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def scripted(text: str) -> dict:
    """extra_body for an answer of exactly `text`, then end of generation."""
    return {"sampler": "script", "sampler_args": {"text": text}}


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*KEYED)


@pytest.fixture(scope="module")
def client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=PATIENCE)


def post(server, body: dict | bytes, path: str = "/v1/messages", headers: dict | None = None) -> httpx.Response:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **(headers or {})}
    if isinstance(body, dict):
        return httpx.post(server.url + path, json=body, headers=headers, timeout=PATIENCE)
    return httpx.post(server.url + path, content=body, headers=headers, timeout=PATIENCE)


def events(response: httpx.Response) -> tuple[list[str], list[dict]]:
    """A stream's event names (its `event:` lines) and data."""
    names, bodies = [], []
    for frame in response.text.strip().split("\n\n"):
        event, data = frame.split("\n")
        names.append(event.removeprefix("event: "))
        bodies.append(json.loads(data.removeprefix("data: ")))
    return names, bodies


def test_create_answers_a_message_with_text_stop_reason_and_usage(client):
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "Hi"}],
        extra_body=scripted("The sky is blue."),
    )  # fmt: skip
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sonnet-4-5"
    assert [(b.type, b.text) for b in message.content] == [("text", "The sky is blue.")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens + usage.cache_read_input_tokens > 0 and usage.cache_creation_input_tokens == 0
    assert usage.output_tokens >= 4  # the text's tokens and the end of generation


def test_a_model_without_a_reasoning_format_reads_think_tags_as_text(client):
    text = "<think>not a thought</think> the answer"
    message = client.messages.create(
        model="m", max_tokens=32, messages=[{"role": "user", "content": "Hi"}], extra_body=scripted(text)
    )
    assert [(b.type, b.text) for b in message.content] == [("text", text)]


def test_a_stop_sequence_ends_the_text_and_is_named(client):
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "Count"}],
        stop_sequences=["never", "STOP"], extra_body=scripted("one two STOP three"),
    )  # fmt: skip
    assert message.content[0].text == "one two "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")


def test_max_tokens_ends_the_answer_with_its_stop_reason(client):
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=2, messages=[{"role": "user", "content": "Count"}],
        extra_body=scripted("one two three four five six"),
    )  # fmt: skip
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


def test_stream_gives_the_text_stream_and_the_final_message(client):
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "Hi"}],
        system=[{"type": "text", "text": "Be brief."}], extra_body=scripted("Hello there, friend."),
    ) as stream:  # fmt: skip
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Hello there, friend." and len(pieces) > 1
    assert final.content[0].text == "Hello there, friend." and final.stop_reason == "end_turn"
    assert final.usage.output_tokens >= 4


def test_stream_events_come_in_anthropics_order_with_event_lines(server):
    body = {"model": "m", "max_tokens": 8, "stream": True, "messages": ASK, **scripted("Sunny.")}
    response = post(server, body)
    assert response.headers["content-type"].startswith("text/event-stream")
    names, bodies = events(response)
    assert [b["type"] for b in bodies] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert bodies[0]["message"]["content"] == [] and bodies[0]["message"]["stop_reason"] is None
    assert bodies[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert bodies[-2]["usage"]["output_tokens"] >= 2


def test_a_stream_whose_first_token_is_slow_starts_at_once_and_pings(server):
    # The first token comes after FIRST_EVENT_WAIT_SECONDS (1 s): the stream has started before it.
    body = {"model": "m", "max_tokens": 8, "stream": True, "messages": ASK}
    body |= {"sampler": "script", "sampler_args": {"text": "Late.", "delay": 1.5}}
    names, bodies = events(post(server, body))
    assert names[:2] == ["message_start", "ping"]
    assert [n for n in names if n != "ping"][1:3] == ["content_block_start", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(b["delta"]["text"] for b in bodies if b["type"] == "content_block_delta") == "Late."


def test_tool_choice_any_calls_a_tool_and_the_result_goes_back(client):
    asked = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=40, messages=ASK, tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body={"seed": 1},
    )  # fmt: skip
    assert asked.stop_reason == "tool_use"
    [call] = asked.content
    assert call.type == "tool_use" and call.id.startswith("toolu_") and call.name == "get_weather"
    jsonschema.validate(call.input, WEATHER["input_schema"])
    result = {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "18 C, sunny"}]}
    answered = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=16, tools=[WEATHER],
        messages=[*ASK, {"role": "assistant", "content": asked.content}, {"role": "user", "content": [result]}],
        extra_body=scripted("It is sunny."),
    )  # fmt: skip
    assert answered.content[0].text == "It is sunny." and answered.stop_reason == "end_turn"


def test_a_streamed_tool_call_arrives_as_input_json_deltas(client):
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=40, messages=ASK, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"seed": 2},
    ) as stream:  # fmt: skip
        deltas = [e.delta.partial_json for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    [call] = final.content
    assert call.type == "tool_use" and json.loads("".join(deltas)) == call.input
    jsonschema.validate(call.input, WEATHER["input_schema"])
    assert final.stop_reason == "tool_use"


def test_count_tokens_counts_what_create_reads(client):
    kwargs = {"model": "claude-sonnet-4-5", "messages": ASK, "system": "You answer weather questions."}
    counted = client.messages.count_tokens(**kwargs, tools=[WEATHER]).input_tokens
    usage = client.messages.create(**kwargs, tools=[WEATHER], max_tokens=4, extra_body=scripted("Rain.")).usage
    assert counted == usage.input_tokens + usage.cache_read_input_tokens > 20


def test_a_final_assistant_message_is_a_prefill_the_answer_continues(client, server):
    prefill = [*ASK, {"role": "assistant", "content": "In Paris it is"}]
    message = client.messages.create(
        model="m", max_tokens=8, messages=prefill, extra_body=scripted(" sunny.")
    )  # fmt: skip
    assert [(b.type, b.text) for b in message.content] == [("text", " sunny.")]  # the continuation alone
    # The prompt is the conversation up to the prefill, its turn left open: what chat's continue_final_message
    # reads, and fewer tokens than the same turn closed and a new one opened.
    counted = client.messages.count_tokens(model="m", messages=prefill).input_tokens
    as_chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"messages": prefill, "continue_final_message": True, "max_tokens": 1},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=PATIENCE,
    ).json()["usage"]["prompt_tokens"]
    closed = client.messages.count_tokens(model="m", messages=[*prefill, {"role": "user", "content": "?"}])
    assert counted == as_chat < closed.input_tokens


def test_bearer_is_accepted_as_well_as_x_api_key(server):
    # Every other request here sends x-api-key (the SDK's api_key); count_tokens generates nothing.
    body = {"model": "m", "messages": ASK}
    bearer = httpx.post(f"{server.url}/v1/messages/count_tokens", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200 and bearer.json()["input_tokens"] > 5


def test_a_wrong_key_is_a_401_in_anthropics_shape(server):
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.create(
            model="m", max_tokens=2, messages=ASK
        )
    assert refused.value.status_code == 401
    assert refused.value.body["type"] == "error" and refused.value.body["error"]["type"] == "authentication_error"


BAD_BODIES = [
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "messages[0].content[0]"),
    ({"messages": ASK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"messages": ASK, "tools": [{**WEATHER, "input_schema": {"type": "string"}}]}, "tools[0].input_schema"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]}, "toolu_x"),
    ({"messages": ASK, "tool_choice": {"type": "any"}}, "needs tools"),
    ({"messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 10}}, "thinking.budget_tokens"),
    ({"messages": ASK, "n": 2}, "n is not taken on /v1/messages"),
    ({"messages": ASK, "mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]}, "mcp_servers"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [*ASK, {"role": "assistant", "content": "It is "}]}, "cannot end with trailing whitespace"),
]


@pytest.mark.parametrize(("body", "named"), BAD_BODIES)
def test_bad_input_is_a_400_in_anthropics_shape_naming_the_field(server, body, named):
    response = post(server, {"model": "m", "max_tokens": 4, **body})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]


def test_a_missing_max_tokens_is_a_400(server):
    response = post(server, {"model": "m", "messages": ASK})
    assert response.status_code == 400 and "max_tokens is required" in response.json()["error"]["message"]


def test_an_oversized_body_is_a_413_request_too_large(server):
    response = post(server, {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 300_000}]})
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"


def test_an_unknown_path_under_messages_is_a_404_not_found_error(server):
    response = post(server, {}, path="/v1/messages/batches")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_other_paths_keep_openais_error_shape(server):
    response = post(server, {"messages": "nope"}, path="/v1/chat/completions")
    assert response.status_code == 400 and set(response.json()) == {"error"}


def test_unknown_model_names_fall_back_to_the_model_logged_once(server, client):
    # count_tokens resolves names as create does, without generating.
    for _ in range(2):
        client.messages.count_tokens(model="claude-unknown-1", messages=ASK)
    client.messages.count_tokens(model="claude-haiku-4-5", messages=ASK)
    log = server.log()
    assert log.count("'claude-unknown-1' is not served here") == 1
    assert "'claude-haiku-4-5' is not served here" not in log  # the alias maps it


def test_the_docs_example_runs(server, capsys):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "messages.md").read_text()
    code = re.search(r"<!-- anthropic-example -->\s*```python\n(.*?)```", docs, re.S).group(1)
    code = code.replace("8000", str(server.port)).replace('api_key="unused"', f'api_key="{KEY}"')
    exec(compile(code, "messages.md", "exec", dont_inherit=True), {})  # in this process: the SDK is imported
    printed = capsys.readouterr().out
    assert printed.startswith("tool_use get_weather {'city': ") and "input_tokens=" in printed
