"""Reasoning over HTTP (issue 24), the real server driven by a scripted sampler (tests/scripted_sampler.py).

The default model follows no instruction, so a plug-in sampler writes the output: reasoning text, the
closing tag, the answer. Its vocabulary has no <think> token, so the tags are several tokens of text:
every tag here is split across tokens, the case a parser must hold back. One server renders with
DeepSeek-R1's template (the output starts inside the section), one with Qwen3's (the output opens it).
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PATIENCE, VOCAB_MODELS
from tests.server_process import ServerProcess, thinking

TEMPLATES = VOCAB_MODELS / "templates"
ASK = [{"role": "user", "content": "What is 2+2?"}]
THOUGHT = "Two and two. That makes 4."
ANSWER = "The answer is 4."
R1_OUTPUT = f"{THOUGHT}\n</think>\n\n{ANSWER}"
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}


def serve(template: str, *extra: str) -> ServerProcess:
    return ServerProcess(*thinking(TEMPLATES / template), *extra)


@pytest.fixture(scope="module")
def r1():
    proc = serve("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def qwen3(shared_server):
    return shared_server(*thinking(TEMPLATES / "Qwen-Qwen3-0.6B.jinja"))  # test_reasoning_families' too


def body(text, then="eos", **kw) -> dict:
    return {"messages": ASK, "max_tokens": 64, "sampler": "script", "sampler_args": {"text": text, "then": then}, **kw}


def whole(server, **kw) -> dict:
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body(**kw), timeout=PATIENCE)
    assert response.status_code == 200, response.text
    return response.json()


def streamed(server, **kw) -> list[dict]:
    request = {**body(**kw), "stream": True, "stream_options": {"include_usage": True}}
    chunks = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=request, timeout=PATIENCE) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def joined(chunks: list[dict], field: str) -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])


def test_the_answer_and_the_reasoning_come_apart_without_the_tags(r1):
    message = whole(r1, text=R1_OUTPUT)["choices"][0]["message"]
    assert message["content"] == ANSWER
    assert message["reasoning_content"] == message["reasoning"] == THOUGHT


def test_usage_counts_the_reasoning_tokens_apart(r1):
    usage = whole(r1, text=R1_OUTPUT)["usage"]
    reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning_tokens < usage["completion_tokens"]


def test_the_openai_sdk_reads_reasoning_content_through_model_extra(r1):
    client = openai.OpenAI(base_url=f"{r1.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)
    script = {"sampler": "script", "sampler_args": {"text": R1_OUTPUT}}
    completion = client.chat.completions.create(model="m", messages=ASK, max_tokens=64, extra_body=script)
    message = completion.choices[0].message
    assert message.content == ANSWER
    assert message.model_extra["reasoning_content"] == THOUGHT
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(R1_OUTPUT)), max_size=8))
def test_a_stream_cut_anywhere_joins_to_the_whole_answers_fields(r1, cuts):
    bounds = [0, *sorted(cuts), len(R1_OUTPUT)]
    pieces = [R1_OUTPUT[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    answer = whole(r1, text=pieces)
    message = answer["choices"][0]["message"]
    chunks = streamed(r1, text=pieces)
    assert joined(chunks, "reasoning_content") == joined(chunks, "reasoning") == message["reasoning_content"] == THOUGHT
    assert joined(chunks, "content") == message["content"] == ANSWER
    assert chunks[-1]["usage"]["completion_tokens_details"] == answer["usage"]["completion_tokens_details"]


def test_the_budget_closes_the_reasoning_after_exactly_n_tokens(r1):
    words = " ".join(f"w{i}" for i in range(30))
    response = whole(r1, text=words, reasoning_budget_tokens=5, max_tokens=128)
    message = response["choices"][0]["message"]
    tokens = httpx.post(f"{r1.url}/tokenize", json={"content": words}, timeout=PATIENCE).json()["tokens"]
    first_five = httpx.post(f"{r1.url}/detokenize", json={"tokens": tokens[:5]}, timeout=PATIENCE).json()["content"]
    assert message["reasoning_content"] == first_five.strip()
    rest = httpx.post(f"{r1.url}/detokenize", json={"tokens": tokens[5:]}, timeout=PATIENCE).json()["content"]
    assert message["content"] == rest.strip()  # the script went on, now as the answer


def test_thinking_budget_tokens_is_the_alias_and_zero_means_no_reasoning(r1):
    message = whole(r1, text="all of this is the answer", thinking_budget_tokens=0)["choices"][0]["message"]
    assert message["content"] == "all of this is the answer"
    assert "reasoning_content" not in message


def test_a_json_schema_constrains_the_answer_after_free_reasoning(r1):
    thought = "I will answer {not json, as I think} here"
    fmt = {"type": "json_schema", "json_schema": {"name": "ok", "schema": SCHEMA}}
    message = whole(r1, text=f"{thought}\n</think>\n\n", then="greedy", response_format=fmt)["choices"][0]["message"]
    assert message["reasoning_content"] == thought
    jsonschema.validate(json.loads(message["content"]), SCHEMA)


def test_a_tool_call_after_reasoning_is_a_call_and_one_inside_it_is_not(r1):
    inside = '{"tool_calls": [{"name": "get_time", "arguments": {"zone": "UTC"}}]}'
    choice = whole(r1, text=f"Maybe {inside}\n</think>\n\n", then="greedy", tools=[CLOCK], tool_choice="required")[
        "choices"
    ][0]
    assert choice["message"]["reasoning_content"] == f"Maybe {inside}"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time" and json.loads(call["function"]["arguments"])["zone"] in (
        "UTC",
        "CET",
    )
    assert choice["finish_reason"] == "tool_calls"
    plain = whole(r1, text=f"Maybe {inside}\n</think>\n\nNo call needed.", tools=[CLOCK])["choices"][0]
    assert "tool_calls" not in plain["message"]
    assert plain["message"]["content"] == "No call needed." and plain["finish_reason"] == "stop"


def test_a_streamed_tool_call_after_reasoning_carries_the_reasoning_in_deltas(r1):
    chunks = streamed(r1, text="Call the clock.\n</think>\n\n", then="greedy", tools=[CLOCK], tool_choice="required")
    assert joined(chunks, "reasoning_content") == "Call the clock."
    calls = [c for chunk in chunks if chunk["choices"] for c in chunk["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_time"


def test_stop_strings_apply_to_the_answer_not_the_reasoning(r1):
    script = "I stop to think.\n</think>\n\nGo on. STOP here"
    message = whole(r1, text=script, stop=["STOP", "stop"])["choices"][0]["message"]
    assert message["reasoning_content"] == "I stop to think."
    assert message["content"] == "Go on. "


def test_completions_stay_raw_text(r1):
    response = httpx.post(
        f"{r1.url}/v1/completions",
        json={"prompt": "x", "max_tokens": 64, "sampler": "script", "sampler_args": {"text": R1_OUTPUT}},
        timeout=PATIENCE,
    )
    assert response.json()["choices"][0]["text"] == R1_OUTPUT


def test_metrics_count_reasoning_tokens(r1):
    before = _reasoning_total(r1)
    usage = whole(r1, text=R1_OUTPUT)["usage"]
    assert _reasoning_total(r1) - before == usage["completion_tokens_details"]["reasoning_tokens"]


def _reasoning_total(server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=PATIENCE).text
    return float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith("helios_reasoning_tokens_total"))
    )


# --- Qwen3's template: the output opens the section itself -----------------------------------------


def test_an_output_that_opens_the_section_is_split_at_tags_cut_across_tokens(qwen3):
    pieces = ["<th", "ink>\nHm", "m.\n</", "thi", "nk>\n\nHi!"]
    message = whole(qwen3, text=pieces)["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("Hmm.", "Hi!")


def test_enable_thinking_false_leaves_a_think_tag_in_the_output_as_answer_text(qwen3):
    text = "<think>x</think>y"
    off = whole(qwen3, text=text, chat_template_kwargs={"enable_thinking": False})
    assert off["choices"][0]["message"]["content"] == text
    assert off["usage"]["prompt_tokens"] > whole(qwen3, text=text)["usage"]["prompt_tokens"]  # <think></think> rendered


def test_an_answer_without_a_section_is_untouched_content(qwen3):
    message = whole(qwen3, text="Plain answer with </think> in it")["choices"][0]["message"]
    assert message["content"] == "Plain answer with </think> in it" and "reasoning_content" not in message


def test_logprobs_cover_the_reasoning_and_the_answer_each_under_its_field(r1):
    response = whole(r1, text=R1_OUTPUT, logprobs=True)
    logprobs = response["choices"][0]["logprobs"]
    usage = response["usage"]
    assert len(logprobs["reasoning_content"]) == usage["completion_tokens_details"]["reasoning_tokens"]
    assert len(logprobs["reasoning_content"]) + len(logprobs["content"]) == usage["completion_tokens"]
