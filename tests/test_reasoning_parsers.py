"""Reasoning parsers (helios_core.reasoning) over text alone: what is reasoning, what is answer, however cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core import reasoning
from helios_core.reasoning import HARMONY, THINK, Phase, ReasoningPlan, Split, split_text

R1 = "<think>\nLet me add 2 and 2.\n\nThat is 4.\n</think>\n\nThe answer is 4."
HARMONY_TEXT = (
    "<|channel|>analysis<|message|>User asks 2+2. Easy.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The answer is 4."
)


def pieces_of(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def fed(plan: ReasoningPlan, pieces: list[str]) -> tuple[list[str], list[str]]:
    splitter = plan.format.splitter(plan.phase)
    reasoning, content = [], []
    for piece in pieces:
        split = splitter.feed(piece)
        reasoning.append(split.reasoning)
        content.append(split.content)
    end = splitter.finish()
    return [*reasoning, end.reasoning], [*content, end.content]


def test_think_tags_split_reasoning_from_the_answer_without_the_tags_or_their_whitespace():
    assert split_text(ReasoningPlan(THINK), R1) == Split("Let me add 2 and 2.\n\nThat is 4.", "The answer is 4.")


def test_output_that_does_not_open_with_a_think_tag_is_all_answer_even_if_a_tag_follows():
    text = "Hello. <think>not reasoning</think> still the answer"
    assert split_text(ReasoningPlan(THINK), text) == Split("", text)


def test_a_prompt_that_opened_the_section_makes_the_output_start_inside_it():
    plan = reasoning.plan_for(THINK, "<｜User｜>hi<｜Assistant｜><think>\n")
    assert plan.phase is Phase.REASONING
    assert split_text(plan, "I think.\n</think>\n\nHi!") == Split("I think.", "Hi!")


def test_a_prompt_that_closed_the_section_makes_the_output_all_answer():
    plan = reasoning.plan_for(THINK, "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert plan.phase is Phase.ANSWER
    assert split_text(plan, "<think>x</think>y") == Split("", "<think>x</think>y")


def test_reasoning_cut_short_is_reasoning_and_a_partial_closing_tag_is_released_at_the_end():
    assert split_text(ReasoningPlan(THINK), "<think>still thinking </thi") == Split("still thinking </thi", "")


def test_harmony_analysis_is_reasoning_and_final_is_the_answer():
    assert split_text(ReasoningPlan(HARMONY), HARMONY_TEXT) == Split("User asks 2+2. Easy.", "The answer is 4.")


def test_harmony_output_without_a_channel_header_is_all_answer_as_written():
    text = "Just text <|end|> and more"
    assert split_text(ReasoningPlan(HARMONY), text) == Split("", text)


@pytest.mark.parametrize(
    "name, expected", [("none", None), ("deepseek", THINK), ("qwen3", THINK), ("gpt_oss", HARMONY)]
)
def test_formats_are_named_as_llama_server_and_vllm_name_them(name, expected):
    assert reasoning.format_named(name) is expected


def test_an_unknown_format_name_lists_the_choices():
    with pytest.raises(ValueError, match="auto, none, think, harmony"):
        reasoning.format_named("r1")


def test_auto_needs_the_templates_markers_to_be_single_tokens_of_the_vocabulary():
    template = "{{ '<think>' }}{{ '</think>' }}"
    assert reasoning.detect(template, lambda text: True) is THINK
    assert reasoning.detect(template, lambda text: False) is None  # a vocabulary that spells them out
    assert reasoning.detect(None, lambda text: True) is None  # llama.cpp's built-in templates write none


@settings(max_examples=300, deadline=None)
@given(
    text=st.sampled_from([R1, HARMONY_TEXT, "plain <think> answer", "<think>unclosed </th"]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_any_cut_into_pieces_adds_up_to_the_whole_split_and_never_leaks_a_marker(text, cuts):
    plan = ReasoningPlan(HARMONY if "<|" in text else THINK)
    whole = split_text(plan, text)
    reasoning_pieces, content_pieces = fed(plan, pieces_of(text, cuts))
    assert Split("".join(reasoning_pieces), "".join(content_pieces)) == whole
    if text in (R1, HARMONY_TEXT):
        for piece in reasoning_pieces + content_pieces:
            assert "<" not in piece and ">" not in piece
