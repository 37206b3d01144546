"""Reasoning in the scheduler (helios_core.reasoning.tracker through SequenceState): the budget is the sequence's.

Scripted logits (tests/scripted.py) over the default model's vocabulary: the output starts inside the
section (as after DeepSeek-R1's generation prompt) and never closes it by itself, so whatever closes it
is the engine keeping the budget, alone, batched with others, and under speculative decoding.
"""

from __future__ import annotations

from collections import deque

import pytest

from helios_core.engine import Request
from helios_core.generate import GenerationParams
from helios_core.model import Model
from helios_core.reasoning import THINK, Phase, ReasoningPlan
from helios_core.resolve import default_model_path
from helios_core.sequence import Step
from helios_core.speculative import Speculation
from tests.test_speculative import GREEDY, PROMPTS, generated, run, scripted

INSIDE = ReasoningPlan(THINK, Phase.REASONING)


@pytest.fixture(scope="module")
def vocab_model():
    with Model(default_model_path(), vocab_only=True) as model:
        yield model


def closing(model) -> list[int]:
    return model.vocab.tokenize(THINK.close, add_special=False, parse_special=True)


def closed_by(model) -> int:
    """How many of the closing tokens it takes to write </think>: the last reasoning token is the one that ends it."""
    close = closing(model)
    pieces = [model.vocab.token_to_piece(t).decode() for t in close]
    return next(k for k in range(1, len(close) + 1) if "</think>" in "".join(pieces[:k]))


def budgeted(budget: int, **kw) -> GenerationParams:
    return GenerationParams(max_tokens=40, reasoning=INSIDE, reasoning_budget=budget, **GREEDY, **kw)


@pytest.mark.parametrize("budget", [0, 1, 9])
def test_the_engine_closes_the_section_after_exactly_budget_tokens(vocab_model, budget):
    (events,) = run(scripted(vocab_model, 1), PROMPTS[:1], budgeted(budget))
    tokens = generated(events)
    close = closing(vocab_model)
    assert tokens[budget : budget + len(close)] == close
    assert close[0] not in tokens[:budget]
    done = events[-1]
    assert done.usage.reasoning_tokens == budget + closed_by(vocab_model)
    steps = [e for e in events if isinstance(e, Step)]
    assert "".join(s.text for s in steps[: budget + len(close)]) == ""  # nothing of the section is answer
    assert "think>" not in "".join(s.reasoning + s.text for s in steps)


def test_without_a_budget_the_section_stays_open_and_every_token_is_reasoning(vocab_model):
    (events,) = run(scripted(vocab_model, 1), PROMPTS[:1], budgeted(-1))
    assert closing(vocab_model)[2] not in generated(events)
    assert events[-1].usage.reasoning_tokens == events[-1].usage.completion_tokens == 40
    assert "".join(e.text for e in events if isinstance(e, Step)) == ""


def test_batched_sequences_each_keep_their_own_budget(vocab_model):
    budgets = [2, 5, 11, 0]
    scheduler = scripted(vocab_model, 4)
    sinks = [deque() for _ in budgets]
    for prompt, budget, sink in zip(PROMPTS, budgets, sinks, strict=True):
        scheduler.submit(Request(list(prompt), budgeted(budget), sink.append))
    while scheduler.has_work:
        scheduler.step()
    close = closing(vocab_model)
    for budget, sink in zip(budgets, sinks, strict=True):
        assert generated(sink)[budget : budget + len(close)] == close
        assert sink[-1].usage.reasoning_tokens == budget + closed_by(vocab_model)
    assert scheduler.stats.reasoning_tokens == sum(budgets) + 4 * closed_by(vocab_model)


def test_speculative_decoding_keeps_the_budget_and_gives_the_plain_tokens(vocab_model):
    params = budgeted(13)
    plain = generated(run(scripted(vocab_model, 1), PROMPTS[:1], params)[0])
    fast = scripted(vocab_model, 1, Speculation(draft_max=8))
    (events,) = run(fast, PROMPTS[:1], params)
    assert fast.stats.draft_tokens > 0  # drafts ran across the budget's end
    assert generated(events) == plain
    close = closing(vocab_model)
    assert plain[13 : 13 + len(close)] == close
