"""What researchers drive from Python: batched samplers, and many sequences through the engine without HTTP."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from helios_core.context import Context
from helios_core.engine import Done, Engine
from helios_core.generate import GenerationParams
from helios_core.sampling import greedy
from helios_core.sequence import Step
from tests.conftest import PATIENCE, THREADS
from tests.test_engine import PROMPTS, run, scheduler, steps_of


class VectorisedGreedy:
    """A BatchSampler: one argmax over all rows; records the shape and kind of every call."""

    def __init__(self):
        self.calls: list[tuple[int, bool, bool]] = []  # (rows, writeable, a copy rather than llama.cpp's buffer)

    def __call__(self, rows: np.ndarray, states) -> np.ndarray:
        assert rows.shape[0] == len(states)
        self.calls.append((rows.shape[0], rows.flags.writeable, rows.flags.owndata))
        return rows.argmax(axis=1)


def tokens_of(events) -> list[int]:
    return [step.token for step in steps_of(events)]


def test_a_batch_sampler_is_called_once_per_step_for_every_sequence_that_uses_it(model):
    prompts = [model.vocab.tokenize(p) for p in PROMPTS[:3]]
    sampler = VectorisedGreedy()
    s = scheduler(model, 3)
    batched = run(s, prompts, [GenerationParams(max_tokens=6, batch_sampler=sampler) for _ in prompts])
    s.runner.ctx.close()
    # The same prompts, the same slots and batches, one row at a time: the same floats, so the same tokens.
    s = scheduler(model, 3)
    row_by_row = run(s, prompts, [GenerationParams(max_tokens=6, sampler=greedy) for _ in prompts])
    s.runner.ctx.close()
    assert [tokens_of(e) for e in batched] == [tokens_of(e) for e in row_by_row]
    # One call per step with a row for every sequence still running (one may meet its end token
    # first), each a read-only view of llama.cpp's logits.
    lengths = [len(tokens_of(e)) for e in batched]
    expected = [(sum(n > step for n in lengths), False, False) for step in range(max(lengths))]
    assert sampler.calls == expected


def test_rows_come_after_each_sequences_own_processors(model):
    prompt = model.vocab.tokenize(PROMPTS[0])
    sampler = VectorisedGreedy()
    s = scheduler(model, 2)
    (plain,) = run(s, [prompt], [GenerationParams(max_tokens=1, batch_sampler=sampler)])
    banned = tokens_of(plain)[0]
    s.runner.ctx.close()
    s = scheduler(model, 2)
    events = run(
        s,
        [prompt, prompt],
        [
            GenerationParams(max_tokens=1, batch_sampler=sampler, logit_bias={banned: -100.0}),
            GenerationParams(max_tokens=1, batch_sampler=sampler),
        ],
    )
    s.runner.ctx.close()
    assert tokens_of(events[0]) != [banned]
    assert tokens_of(events[1]) == [banned]


def test_a_failing_batch_sampler_ends_its_own_requests_only(model):
    prompts = [model.vocab.tokenize(p) for p in PROMPTS[:2]]
    s = scheduler(model, 2)
    events = run(
        s,
        prompts,
        [
            GenerationParams(max_tokens=3, batch_sampler=lambda rows, states: [0] * (len(states) + 1)),
            GenerationParams(max_tokens=3, temperature=0.0),
        ],
    )
    s.runner.ctx.close()
    failed, fine = events[0][-1], events[1][-1]
    assert isinstance(failed, Done) and "returned 2 tokens for 1 rows" in str(failed.error)
    assert isinstance(fine, Done) and fine.error is None and len(steps_of(events[1])) == 3


def test_sampler_and_batch_sampler_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        GenerationParams(sampler=greedy, batch_sampler=VectorisedGreedy())


@pytest.fixture
def engine(model):
    ctx = Context(model, n_ctx=4 * 256, n_seq_max=4, n_batch=256, n_threads=THREADS)
    engine = Engine(ctx, n_ctx_per_seq=256)
    yield engine
    engine.close()
    ctx.close()


def held_at(step: int, gate: threading.Event):
    """A processor that holds the engine thread at `step` until the gate opens: no race with the test."""

    def hold(logits, state):
        if state.step == step:
            assert gate.wait(PATIENCE)
        return logits

    return hold


def test_the_engine_runs_many_generations_submitted_from_python_together(engine, no_eog):
    sampler = VectorisedGreedy()
    gate = threading.Event()
    generations = [
        engine.generate(
            prompt,
            GenerationParams(
                max_tokens=8, batch_sampler=sampler, logit_bias=no_eog, processors=[held_at(0, gate)] if i == 0 else []
            ),
        )
        for i, prompt in enumerate(PROMPTS)
    ]
    gate.set()  # every request is queued before the first one takes its first token
    texts = [generation.text() for generation in generations]
    assert all(texts) and all(g.finish_reason == "length" for g in generations)
    assert all(g.usage.completion_tokens == 8 for g in generations)
    # Requests that arrive while others generate join their batch: some step sampled several rows at once.
    assert max(rows for rows, *_ in sampler.calls) > 1
    assert sum(rows for rows, *_ in sampler.calls) == 4 * 8


def test_a_cancelled_engine_generation_ends_and_frees_its_slot(engine, no_eog):
    gate = threading.Event()
    params = GenerationParams(max_tokens=200, logit_bias=no_eog, processors=[held_at(1, gate)])
    generation = engine.generate(PROMPTS[0], params)
    assert isinstance(next(generation), Step)
    generation.cancel()
    gate.set()
    rest = list(generation)  # at most the token the engine was holding at
    assert generation.finish_reason == "cancelled" and len(rest) <= 1
    assert engine.wait_idle(timeout=PATIENCE) and engine.busy_slots == 0


def test_an_engine_generation_scores_its_prompt_when_asked(engine):
    generation = engine.generate(PROMPTS[1], GenerationParams(max_tokens=0, prompt_logprobs=1))
    assert list(generation) == []
    scored = generation.prompt_logprobs
    assert scored is not None and scored.logprobs.shape == (len(scored.tokens) - 1,)
    assert np.all(scored.logprobs < 0) and generation.finish_reason == "length"


def test_a_sampler_factory_makes_one_sampler_per_request(engine):
    made = []

    def factory():
        made.append(1)
        return greedy

    generations = [engine.generate(p, GenerationParams(max_tokens=2, sampler_factory=factory)) for p in PROMPTS[:3]]
    assert all(g.text() is not None for g in generations)
    assert len(made) == 3
