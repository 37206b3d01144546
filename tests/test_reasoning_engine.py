"""Reasoning in the scheduler (helios_core.reasoning.tracker through SequenceState): the budget is the sequence's.

Scripted logits (tests/scripted_runner.py) over the default model's vocabulary: the output starts inside the
section (as after DeepSeek-R1's generation prompt) and never closes it by itself, so whatever closes it
is the engine keeping the budget, alone, batched with others, and under speculative decoding.
"""

from __future__ import annotations

import json
from collections import deque

import pytest

from helios_core import constraint
from helios_core.engine import Request, Scheduler
from helios_core.generate import GenerationParams
from helios_core.model import Model
from helios_core.reasoning import THINK, Phase, ReasoningFormat, ReasoningPlan
from helios_core.reasoning.think_tags import ThinkTagSplitter
from helios_core.resolve import default_model_path
from helios_core.sequence import Step
from helios_core.speculative import Speculation
from tests.conftest import VOCAB_MODELS
from tests.scripted_runner import ScriptedRunner, peaked
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


# --- the constraint covers the answer only -----------------------------------------------------------


@pytest.fixture(scope="module")
def gemma4():
    with Model(VOCAB_MODELS / "ggml-vocab-gemma-4.gguf", vocab_only=True) as model:
        yield model


def test_a_constraint_lets_the_section_open_then_waits_for_its_end(gemma4):
    # Gemma 4's vocabulary holds <|channel> and <channel|> as single tokens: a section whose opening
    # is one token, as Qwen3's <think> is, which the constraint must let through at the first step.
    fmt = ReasoningFormat(
        "channel",
        "<|channel>",
        "<channel|>",
        ("<|channel>", "<channel|>"),
        lambda phase: ThinkTagSplitter(phase, "<|channel>", "<channel|>"),
    )
    vocab = gemma4.vocab
    (opening,) = vocab.tokenize("<|channel>", add_special=False, parse_special=True)
    (closing_,) = vocab.tokenize("<channel|>", add_special=False, parse_special=True)
    thought = vocab.tokenize(" not json {", add_special=False)
    prompt = vocab.tokenize("Answer yes.", add_special=False)
    script = [opening, *thought, closing_]

    def rule(held: list[int]):
        k = len(held) - len(prompt)  # tokens generated before this row's
        return peaked(vocab.n_vocab, {script[k]: 10.0} if k < len(script) else {vocab.eos: 1.0})

    scheduler = Scheduler(ScriptedRunner(gemma4, rule), n_ctx_per_seq=256)
    params = GenerationParams(
        max_tokens=24,
        temperature=0.0,
        reasoning=ReasoningPlan(fmt),
        constraint=constraint.json_schema({"enum": ["yes"]}),
    )
    (events,) = run(scheduler, [prompt], params)
    steps = [e for e in events if isinstance(e, Step)]
    assert generated(events)[: len(script)] == script  # the section was free
    assert "".join(s.reasoning for s in steps) == "not json {"
    assert json.loads("".join(s.text for s in steps)) == "yes"
    assert events[-1].usage.reasoning_tokens == len(script)
