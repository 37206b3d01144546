"""Reasoning and real chat templates: llama.cpp's vocab-only GGUFs and templates, rendered as a request would be.

What `--reasoning-format auto` picks for a model, where a rendered prompt leaves the output (inside the
section, in the answer, or undecided), `enable_thinking` and `reasoning_effort` reaching the template,
and an earlier turn's `reasoning_content` rendered as the template writes it.
"""

from __future__ import annotations

import pytest

from helios_core import chat, reasoning
from helios_core.model import Model
from helios_core.reasoning import GEMMA4, THINK, Phase
from helios_http import reasoning_fields
from helios_http.errors import APIError
from helios_http.schemas import parse_chat
from tests.conftest import VOCAB_MODELS

TEMPLATES = VOCAB_MODELS / "templates"
QWEN3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()
R1_DISTILL = (TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text()
GPT_OSS = (TEMPLATES / "openai-gpt-oss-120b.jinja").read_text()
ASK = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def gemma4():
    with Model(VOCAB_MODELS / "ggml-vocab-gemma-4.gguf", vocab_only=True) as model:
        yield model


@pytest.fixture(scope="module")
def qwen():
    with Model(VOCAB_MODELS / "ggml-vocab-qwen35.gguf", vocab_only=True) as model:
        yield model


def rendered(source: str, body: dict, default_budget: int = -1) -> tuple[str, object]:
    """The prompt text a chat request renders to with `source`, and the parsed request."""
    parsed = parse_chat({"messages": ASK, **body})
    variables = reasoning_fields.template_variables(parsed, source, default_budget)
    return chat.ChatTemplate.jinja(source).render(parsed.messages, variables=variables), parsed


def test_auto_finds_gemma_4s_thought_channel_from_its_own_template_and_vocabulary(gemma4):
    assert reasoning.resolve("auto", gemma4.chat_template(), gemma4.vocab) is GEMMA4


def test_auto_finds_no_format_where_the_vocabulary_spells_the_tags_out(qwen):
    # This vocab-only Qwen GGUF has no <think> token: text that merely looks like a tag is no section.
    assert reasoning.resolve("auto", QWEN3, qwen.vocab) is None


def test_auto_finds_no_format_for_a_builtin_template(qwen):
    assert reasoning.resolve("auto", None, qwen.vocab) is None


def test_gemma_4_with_thinking_off_renders_an_empty_thought_and_the_output_starts_in_the_answer(gemma4):
    source = gemma4.chat_template()
    off, _ = rendered(source, {"chat_template_kwargs": {"enable_thinking": False}})
    on, _ = rendered(source, {"chat_template_kwargs": {"enable_thinking": True}})
    assert reasoning.plan_for(GEMMA4, off).phase is Phase.ANSWER
    assert reasoning.plan_for(GEMMA4, on).phase is Phase.START
    assert "<|think|>" in on and "<|think|>" not in off


def test_enable_thinking_false_is_rendered_into_qwen3s_generation_prompt():
    text, _ = rendered(QWEN3, {"chat_template_kwargs": {"enable_thinking": False}})
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert reasoning.plan_for(THINK, text).phase is Phase.ANSWER


def test_a_budget_of_zero_turns_qwen3s_thinking_off_unless_the_request_sets_it():
    text, parsed = rendered(QWEN3, {"reasoning_budget_tokens": 0})
    assert text.endswith("<think>\n\n</think>\n\n") and parsed.sampling.reasoning_budget == 0
    text, _ = rendered(QWEN3, {"reasoning_budget_tokens": 0, "chat_template_kwargs": {"enable_thinking": True}})
    assert text.endswith("<|im_start|>assistant\n")


def test_reasoning_effort_none_turns_thinking_off_and_sets_a_zero_budget():
    text, parsed = rendered(QWEN3, {"reasoning_effort": "none"})
    assert text.endswith("</think>\n\n") and parsed.sampling.reasoning_budget == 0


def test_the_server_default_budget_applies_when_the_request_names_none():
    _, parsed = rendered(QWEN3, {}, default_budget=64)
    assert parsed.sampling.reasoning_budget == 64
    _, parsed = rendered(QWEN3, {"thinking_budget_tokens": 8}, default_budget=64)
    assert parsed.sampling.reasoning_budget == 8


def test_deepseek_r1s_template_opens_the_section_so_the_output_starts_inside_it():
    text, _ = rendered(R1_DISTILL, {})
    assert text.endswith("<｜Assistant｜><think>\n")  # enable_thinking true by default, as llama-server passes it
    assert reasoning.plan_for(THINK, text).phase is Phase.REASONING


def test_reasoning_effort_reaches_gpt_oss_template():
    text, _ = rendered(GPT_OSS, {"reasoning_effort": "high"})
    assert "Reasoning: high" in text


def test_qwen3_keeps_the_reasoning_of_the_turn_after_the_last_question_and_drops_earlier_ones():
    turns = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one", "reasoning_content": "EARLIER THOUGHT"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "two", "reasoning_content": "LATEST THOUGHT"},
    ]
    parsed = parse_chat({"messages": turns})
    text = chat.ChatTemplate.jinja(QWEN3).render(parsed.messages, add_generation_prompt=False)
    assert "EARLIER THOUGHT" not in text
    assert "<think>\nLATEST THOUGHT\n</think>\n\ntwo" in text


@pytest.mark.parametrize(
    "body, param",
    [
        ({"chat_template_kwargs": "on"}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
        ({"reasoning_effort": "huge"}, "reasoning_effort"),
        ({"reasoning_budget_tokens": -2}, "reasoning_budget_tokens"),
        ({"thinking_budget_tokens": "many"}, "thinking_budget_tokens"),
        ({"messages": [{"role": "user", "content": "x", "reasoning_content": "y"}]}, "messages[0].reasoning_content"),
    ],
)
def test_bad_reasoning_fields_are_400s_naming_the_field(body, param):
    with pytest.raises(APIError) as raised:
        parse_chat({"messages": ASK, **body})
    assert raised.value.status == 400 and raised.value.param == param


def test_anthropics_thinking_maps_onto_the_budget_and_disabled_turns_qwen3s_thinking_off():
    parsed = parse_chat({"messages": ASK})
    reasoning_fields.apply_thinking(parsed, {"type": "enabled", "budget_tokens": 1024})
    assert parsed.sampling.reasoning_budget == 1024
    reasoning_fields.apply_thinking(parsed, {"type": "disabled"})
    variables = reasoning_fields.template_variables(parsed, QWEN3)
    assert chat.ChatTemplate.jinja(QWEN3).render(parsed.messages, variables=variables).endswith("</think>\n\n")


def test_the_responses_apis_reasoning_effort_is_chats():
    parsed = parse_chat({"messages": ASK})
    reasoning_fields.apply_effort(parsed, {"effort": "high", "summary": "auto"})
    assert parsed.reasoning_effort == "high"


@pytest.mark.parametrize(
    "apply, value, param",
    [
        (reasoning_fields.apply_thinking, {"type": "on"}, "thinking"),
        (reasoning_fields.apply_thinking, {"type": "enabled", "budget_tokens": -5}, "thinking.budget_tokens"),
        (reasoning_fields.apply_effort, {"effort": "max"}, "reasoning.effort"),
        (reasoning_fields.apply_effort, "high", "reasoning"),
    ],
)
def test_other_families_bad_thinking_switches_are_400s_naming_the_field(apply, value, param):
    with pytest.raises(APIError) as raised:
        apply(parse_chat({"messages": ASK}), value)
    assert raised.value.status == 400 and raised.value.param == param
