"""Reasoning in the Responses and Messages families (issue 24), through the real openai and anthropic SDKs.

One real server renders with Qwen3's template (its output opens the thinking section itself) under
`--reasoning-format think`; the scripted plug-in sampler (tests/scripted_sampler.py) writes the output,
the tags cut across tokens. The translations of earlier turns are checked on the request parsers alone.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from helios_http.errors import APIError
from helios_http.messages.request import parse_messages
from helios_http.responses_request import parse_responses
from tests.conftest import PATIENCE, VOCAB_MODELS
from tests.server_process import thinking

THOUGHT, ANSWER = "plan it", "the answer"
OUTPUT = ["<th", "ink>\n", THOUGHT, "\n</", "think>\n\n", ANSWER]
ASK = "What is 2+2?"


def scripted(text: str | list[str] = OUTPUT, then: str = "eos") -> dict:
    return {"sampler": "script", "sampler_args": {"text": text, "then": then}}


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*thinking(VOCAB_MODELS / "templates" / "Qwen-Qwen3-0.6B.jinja"))  # test_server_reasoning's too


@pytest.fixture(scope="module")
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


@pytest.fixture(scope="module")
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=PATIENCE)


# --- Responses -------------------------------------------------------------------------------


def test_a_response_opens_with_a_typed_reasoning_item_then_its_message(oai):
    response = oai.responses.create(model="m", input=ASK, max_output_tokens=64, extra_body=scripted())
    reasoning, message = response.output
    assert isinstance(reasoning, openai.types.responses.ResponseReasoningItem)
    assert [part.text for part in reasoning.content] == [THOUGHT] and reasoning.summary == []
    assert response.output_text == ANSWER


def test_a_response_counts_its_reasoning_tokens(oai):
    usage = oai.responses.create(model="m", input=ASK, max_output_tokens=64, extra_body=scripted()).usage
    assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens


def test_streamed_reasoning_text_deltas_join_to_the_reasoning_items_text(oai):
    with oai.responses.stream(model="m", input=ASK, max_output_tokens=64, extra_body=scripted()) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    (done,) = [e.text for e in events if e.type == "response.reasoning_text.done"]
    assert deltas == done == final.output[0].content[0].text == THOUGHT
    kinds = [e.type for e in events if e.type.startswith("response.output_item")]
    assert kinds == ["response.output_item.added", "response.output_item.done"] * 2
    assert final.output_text == ANSWER


def test_reasoning_effort_none_reaches_the_templates_switch(server):
    def input_tokens(effort: str) -> int:
        body = {"model": "m", "input": ASK, "reasoning": {"effort": effort}}
        return httpx.post(f"{server.url}/v1/responses/input_tokens", json=body, timeout=PATIENCE).json()["input_tokens"]

    assert input_tokens("none") > input_tokens("high")  # Qwen3's empty <think></think> is rendered


def test_a_bad_reasoning_effort_is_a_400_naming_the_field(oai):
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="m", input=ASK, reasoning={"effort": "maximal"})
    assert refused.value.body["param"] == "reasoning.effort"


def test_a_reasoning_item_sent_back_is_the_next_assistant_turns_reasoning():
    items = [
        {"role": "user", "content": ASK},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": THOUGHT}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "4"},
    ]
    chat = parse_responses({"input": items}, []).chat
    assistant = chat.messages[1]
    assert (assistant["role"], assistant["reasoning_content"]) == ("assistant", THOUGHT)
    assert assistant["tool_calls"][0]["id"] == "c1"


def test_a_malformed_reasoning_item_is_a_400_naming_its_part(server):
    item = {"type": "reasoning", "summary": [], "content": [{"type": "output_text", "text": "x"}]}
    body = {"model": "m", "input": [item, {"role": "user", "content": ASK}]}
    response = httpx.post(f"{server.url}/v1/responses", json=body, timeout=PATIENCE)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input[0].content[0]"


# --- Messages --------------------------------------------------------------------------------


def test_a_message_opens_with_a_typed_thinking_block_then_its_text(claude):
    message = claude.messages.create(
        model="m", max_tokens=64, messages=[{"role": "user", "content": ASK}], extra_body=scripted()
    )
    thinking, text = message.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert (thinking.thinking, thinking.signature) == (THOUGHT, "")
    assert isinstance(text, anthropic.types.TextBlock) and text.text == ANSWER


def test_a_streamed_thinking_block_joins_its_deltas_and_is_signed_before_it_stops(claude):
    with claude.messages.stream(
        model="m", max_tokens=64, messages=[{"role": "user", "content": ASK}], extra_body=scripted()
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    thinking = "".join(
        e.delta.thinking for e in events if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    )
    assert thinking == final.content[0].thinking == THOUGHT
    first_block = [(e.type, getattr(e, "delta", None)) for e in events if getattr(e, "index", None) == 0]
    assert first_block[-2][1].type == "signature_delta" and first_block[-1][0] == "content_block_stop"
    assert final.content[1].text == ANSWER


def test_thinking_disabled_reaches_the_templates_switch_and_the_budget(claude):
    ask = [{"role": "user", "content": ASK}]
    off = claude.messages.count_tokens(model="m", messages=ask, thinking={"type": "disabled"}).input_tokens
    assert off > claude.messages.count_tokens(model="m", messages=ask).input_tokens
    text = "<think>x</think>y"
    message = claude.messages.create(
        model="m", max_tokens=64, messages=ask, thinking={"type": "disabled"}, extra_body=scripted(text)
    )
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == text


def test_a_thinking_budget_closes_the_thinking_block(claude):
    words = " ".join(f"w{i}" for i in range(30))
    message = claude.messages.create(
        model="m", max_tokens=128, messages=[{"role": "user", "content": ASK}],
        thinking={"type": "enabled", "budget_tokens": 8}, extra_body=scripted(f"<think>\n{words}"),
    )  # fmt: skip
    thinking, text = message.content
    assert thinking.type == "thinking" and text.type == "text"
    # The budget closed the section (here inside a word); the script went on, now as the answer.
    assert thinking.thinking + text.text == words and text.text


def test_thinking_blocks_sent_back_are_the_assistant_turns_reasoning():
    messages = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": THOUGHT, "signature": ""},
                                          {"type": "text", "text": ANSWER}]},
        {"role": "user", "content": "And 3+3?"},
    ]  # fmt: skip
    chat = parse_messages({"messages": messages, "max_tokens": 8}, "m").chat
    assert chat.messages[1]["reasoning_content"] == THOUGHT and chat.messages[1]["content"] == ANSWER


def test_a_thinking_block_without_its_text_is_a_400_naming_it():
    messages = [
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": [{"type": "thinking", "signature": ""}]},
        {"role": "user", "content": "And 3+3?"},
    ]
    with pytest.raises(APIError) as refused:
        parse_messages({"messages": messages, "max_tokens": 8}, "m")
    assert refused.value.param == "messages[1].content[0].thinking"


def test_earlier_reasoning_reaches_a_template_that_keeps_it(claude):
    # Qwen3 keeps the thinking of assistant turns after the last question: here, the turn that called a tool.
    def count(thinking: list[dict]) -> int:
        call = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
        messages = [
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": [*thinking, call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"}]},
        ]
        tool = {"name": "f", "input_schema": {"type": "object"}}
        return claude.messages.count_tokens(model="m", messages=messages, tools=[tool]).input_tokens

    assert count([{"type": "thinking", "thinking": THOUGHT, "signature": ""}]) > count([])
