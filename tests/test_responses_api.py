"""OpenAI's Responses API against a real `helios-engine serve`, through the real openai SDK (issue 23).

The default model is a base model that follows no instruction: structured output and tool calls
are tested through constraints (text.format, tool_choice "required" or a named function), which
allow it nothing else. Generations are short; one server serves the whole module.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import PATIENCE, ROOT
from tests.server_process import PLAIN, no_eog

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK = "What is the weather in Paris?"
CALL_WEATHER = {"type": "function", "name": "get_weather"}


class Weather(BaseModel):
    city: Literal["Paris", "Rome"]
    sunny: bool


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*PLAIN)  # bodies up to 1 MiB, 16 tokens without a limit


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


@pytest.fixture(scope="module")
def called(client):
    """A response whose output is one forced call of get_weather."""
    return client.responses.create(
        model="m", input=ASK, tools=[WEATHER], tool_choice=CALL_WEATHER, max_output_tokens=40, temperature=0
    )


def create(client, **kw):
    return client.responses.create(
        **{"model": "m", "input": "The sky is", "max_output_tokens": 4, "temperature": 0, **kw}
    )


def answer_call(client, called, output="Sunny", **kw):
    """The next turn after `called`: its call answered through previous_response_id."""
    (call,) = called.output
    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": output}]
    return create(client, previous_response_id=called.id, input=answer, tools=[WEATHER], **kw)


def test_create_answers_a_response_whose_output_text_is_its_message(client):
    response = create(client)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text == message.content[0].text
    usage = response.usage
    assert usage.input_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_a_model_without_a_reasoning_format_answers_no_reasoning_item(client):
    response = create(client)
    assert [item.type for item in response.output] == ["message"]
    assert response.usage.output_tokens_details.reasoning_tokens == 0


def test_reaching_max_output_tokens_is_incomplete_with_the_reason(client):
    response = create(client, max_output_tokens=3, extra_body={"logit_bias": no_eog()})
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_a_request_without_a_limit_stops_at_the_servers_n_predict(client):
    # Codex sends no max_output_tokens; without --n-predict a base model writes until the context is full.
    response = client.responses.create(model="m", input="The sky is", extra_body={"logit_bias": no_eog()})
    assert response.status == "incomplete"
    assert response.usage.output_tokens == 16


def test_a_stream_sends_openai_events_in_order(client):
    events = list(create(client, stream=True, max_output_tokens=3, extra_body={"logit_bias": no_eog()}))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].response.output_text == text == events[-4].text


def test_a_stream_names_each_event_on_its_event_line(server):
    body = {"model": "m", "input": "Hi", "max_output_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=PATIENCE) as r:
        frames = [f for f in r.read().decode().split("\n\n") if f]
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.removeprefix("event: ") == json.loads(data_line.removeprefix("data: "))["type"]


def test_parse_with_a_pydantic_model_gets_an_instance(client):
    response = client.responses.parse(
        model="m", input="The weather in Paris as JSON:", text_format=Weather, max_output_tokens=60, temperature=0
    )
    assert isinstance(response.output_parsed, Weather)
    assert response.text.format.type == "json_schema"


def test_the_sdk_stream_helper_accumulates_a_parsed_final_response(client):
    with client.responses.stream(
        model="m", input="The weather in Rome as JSON:", text_format=Weather, max_output_tokens=60, temperature=0
    ) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(texts)
    assert isinstance(final.output_parsed, Weather)


def test_logprobs_are_included_on_output_text_when_asked_for(client):
    response = create(client, include=["message.output_text.logprobs"], top_logprobs=2, max_output_tokens=2)
    logprobs = response.output[0].content[0].logprobs
    assert len(logprobs) == response.usage.output_tokens
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 2 for entry in logprobs)


def test_a_forced_function_call_is_a_function_call_item_valid_for_its_schema(called):
    (call,) = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_a_call_answered_through_previous_response_id_continues_the_conversation(client, called):
    answer = answer_call(client, called, "Sunny, 24 C")
    assert answer.status in ("completed", "incomplete") and answer.previous_response_id == called.id
    assert answer.usage.input_tokens > called.usage.input_tokens


def test_a_continued_conversation_reuses_the_cached_prefix(client, called):
    answer = answer_call(client, called, max_output_tokens=1)
    assert answer.usage.input_tokens_details.cached_tokens > 0


def test_a_call_answered_by_sending_its_items_back_needs_no_store(client, called):
    (call,) = called.output
    items = [
        {"role": "user", "content": ASK},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
    ]
    answer = create(client, input=items, tools=[WEATHER], store=False)
    assert answer.status in ("completed", "incomplete") and answer.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)


def test_retrieve_list_input_items_and_delete(client):
    response = create(client, input="Remember me", metadata={"k": "v"})
    assert client.responses.retrieve(response.id).output_text == response.output_text
    (item,) = client.responses.input_items.list(response.id).data
    assert item.type == "message" and item.content[0].text == "Remember me"
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve(response.id)
    assert missing.value.body["message"] == f"Response with id '{response.id}' not found."


def test_input_items_of_a_continued_response_list_the_conversation_newest_first(client, called):
    answer = answer_call(client, called)
    kinds = [item.type for item in client.responses.input_items.list(answer.id).data]
    assert kinds == ["function_call_output", "function_call", "message"]


def test_input_items_come_a_page_at_a_time(client, called):
    answer = answer_call(client, called)
    first = client.responses.input_items.list(answer.id, limit=1, order="asc")
    assert first.has_more and first.data[0].type == "message"
    rest = client.responses.input_items.list(answer.id, after=first.data[0].id, order="asc")
    assert [item.type for item in rest.data] == ["function_call", "function_call_output"] and not rest.has_more


def test_an_unknown_previous_response_id_is_a_404_naming_the_field(client):
    with pytest.raises(openai.NotFoundError) as missing:
        create(client, previous_response_id="resp_nowhere")
    assert missing.value.body["param"] == "previous_response_id"


def test_extension_fields_reach_the_sampler(client, server):
    forced = httpx.post(f"{server.url}/tokenize", json={"content": " blue"}).json()["tokens"][-1]
    response = create(client, max_output_tokens=1, extra_body={"logit_bias": {str(forced): 100}})
    assert response.output_text == " blue"


def test_input_tokens_counts_the_prompt_a_create_would_read(client, server):
    body = {"model": "m", "input": "Count me", "instructions": "Be brief"}
    counted = httpx.post(f"{server.url}/v1/responses/input_tokens", json=body).json()
    assert counted["object"] == "response.input_tokens"
    assert counted["input_tokens"] == create(client, input="Count me", instructions="Be brief").usage.input_tokens


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": [{"type": "message", "role": "user", "content": 7}]}, "input[0].content"),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "?"}]}, "input[0].call_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",  # served without --mmproj: this model reads text only
        ),
        ({"input": "Hi", "background": True}, "background"),
        ({"input": "Hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": "Hi", "tools": [dict(WEATHER, name="a b")]}, "tools[0].name"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape_naming_the_field(server, body, param):
    r = httpx.post(f"{server.url}/v1/responses", json={"model": "m", **body}, timeout=PATIENCE)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_a_body_over_the_limit_is_a_413_and_the_server_keeps_serving(server, client):
    r = httpx.post(f"{server.url}/v1/responses", json={"model": "m", "input": "x" * (1 << 21)}, timeout=PATIENCE)
    assert r.status_code == 413 and "error" in r.json()
    assert create(client, max_output_tokens=1).status in ("completed", "incomplete")


def test_apply_template_renders_the_prompt_without_generating(server):
    body = {"messages": [{"role": "user", "content": "Hello there"}]}
    prompt = httpx.post(f"{server.url}/apply-template", json=body).json()["prompt"]
    assert "Hello there" in prompt and prompt.rstrip().endswith("model")


def test_props_reports_slots_context_and_template(server):
    props = httpx.get(f"{server.url}/props").json()
    assert props["total_slots"] == 4
    assert props["default_generation_settings"]["n_ctx"] == 1024
    assert props["chat_template"] and props["build_info"].startswith("helios-engine")


def test_the_docs_example_runs_as_written(server, capsys):
    docs = (ROOT / "docs" / "responses.md").read_text()
    code = re.search(r"<!-- responses-example -->\s*```python\n(.*?)```", docs, re.S).group(1)
    exec(
        compile(
            code.replace("127.0.0.1:8000", server.url.removeprefix("http://")),
            "responses.md",
            "exec",
            dont_inherit=True,
        ),
        {},
    )
    printed = capsys.readouterr().out
    assert "get_weather" in printed and "came from the cache" in printed
