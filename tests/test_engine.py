"""The scheduler: one decode per step for many sequences, prefix-matched slots, fairness."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import pytest

from helios_core.context import Context
from helios_core.engine import Done, Engine, PromptTooLongError, QueueFullError, Request, Scheduler
from helios_core.errors import HeliosError
from helios_core.generate import GenerationParams

GREEDY = dict(temperature=0.0)
# llama.cpp's CPU kernels are not batch-invariant: the same sequence decoded
# alone or beside others moves logits by up to this much (measured on the
# default model: see test_batched_logits_match_alone_within_tolerance).
BATCH_TOLERANCE = 1.5


def scheduler(model, slots: int, **kw) -> Scheduler:
    ctx = Context(model, n_ctx=512 * slots, n_seq_max=slots, n_batch=256, n_threads=2)
    return Scheduler(ctx, n_ctx_per_seq=512, **kw)


def run(s: Scheduler, prompts, params_list) -> list[list]:
    """Submit all, step until all are done; events per request."""
    events = [deque() for _ in prompts]
    for prompt, params, sink in zip(prompts, params_list, events, strict=True):
        s.submit(Request(list(prompt), params, sink.append))
    while s.has_work:
        s.step()
    return [list(e) for e in events]


def steps_of(events) -> list:
    return [e for e in events if not isinstance(e, Done)]


PROMPTS = ["The capital of France is", "def add(a, b):", "Roses are red,", "In the beginning"]


def test_batched_logits_match_alone_within_tolerance(model):
    """Teacher-forced: every request follows a fixed token script, so rows are comparable step by step."""
    prompts = [model.vocab.tokenize(p) for p in PROMPTS]
    script = model.vocab.tokenize(" and then the story went on and on", add_special=False)[:8]

    def params(captured):
        def capture(logits, state):
            captured.append(logits.copy())
            return logits

        return GenerationParams(max_tokens=len(script), sampler=lambda logits, state: script[state.step],
                                processors=[capture])

    alone = []
    for prompt in prompts:
        captured = []
        s = scheduler(model, 1)
        run(s, [prompt], [params(captured)])
        s.ctx.close()
        alone.append(captured)
    together = [[] for _ in prompts]
    s = scheduler(model, 4)
    run(s, prompts, [params(c) for c in together])
    assert s.stats.batch_sequences / s.stats.steps > 3  # they really shared the decodes
    s.ctx.close()

    worst = max(float(np.abs(a - b).max()) for x, y in zip(alone, together, strict=True)
                for a, b in zip(x, y, strict=True))
    assert worst <= BATCH_TOLERANCE
    # Where the best token leads by more than the tolerance, batching cannot change the choice.
    for x, y in zip(alone, together, strict=True):
        for a, b in zip(x, y, strict=True):
            top2 = np.sort(a)[-2:]
            if top2[1] - top2[0] > 2 * BATCH_TOLERANCE:
                assert int(a.argmax()) == int(b.argmax())


def test_a_new_request_takes_the_slot_with_the_longest_common_prefix(model):
    s = scheduler(model, 2)
    system = model.vocab.tokenize("You are a helpful assistant who answers briefly and precisely. " * 3)
    other = model.vocab.tokenize("Completely different text about cooking pasta.")
    run(s, [system + model.vocab.tokenize(" Q1", add_special=False), other], [GenerationParams(max_tokens=2)] * 2)
    holder = next(slot for slot in s.slots if slot.cache.tokens[: len(system)] == system)
    follow_up = system + model.vocab.tokenize(" Q2", add_special=False)
    events = deque()
    request = Request(follow_up, GenerationParams(max_tokens=2), events.append)
    s.submit(request)
    s.step()
    assert holder.request is request or holder.cache.tokens[: len(system)] == system
    while s.has_work:
        s.step()
    assert request.usage.cached_tokens >= len(system)
    s.ctx.close()


def test_requests_start_in_arrival_order(model):
    s = scheduler(model, 1)
    order = []
    for i in range(3):
        s.submit(Request(model.vocab.tokenize(f"Request number {i}"), GenerationParams(max_tokens=2),
                         lambda e, i=i: order.append(i) if isinstance(e, Done) else None))
    while s.has_work:
        s.step()
    assert order == [0, 1, 2]
    s.ctx.close()


def test_cancel_frees_the_slot_before_the_next_step(model):
    s = scheduler(model, 1)
    events = deque()
    request = Request(model.vocab.tokenize("Tell me a long story"), GenerationParams(max_tokens=200), events.append)
    s.submit(request)
    for _ in range(4):
        s.step()
    request.cancel()
    s.step()
    assert s.busy_slots == 0
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "cancelled"
    generated = len(steps_of(events))
    assert generated <= 4
    s.ctx.close()


def test_a_failing_custom_sampler_ends_only_its_request(model):
    s = scheduler(model, 2)

    def broken(logits, state):
        raise RuntimeError("researcher bug")

    good, bad = run(s, [model.vocab.tokenize("Good"), model.vocab.tokenize("Bad")],
                    [GenerationParams(max_tokens=4, **GREEDY), GenerationParams(max_tokens=4, sampler=broken)])
    assert good[-1].finish_reason == "length" and len(steps_of(good)) == 4
    assert isinstance(bad[-1].error, RuntimeError)
    s.ctx.close()


def test_prompt_reading_is_bounded_while_others_generate(model):
    s = scheduler(model, 2, prefill_per_step=16)
    events = deque()
    s.submit(Request(model.vocab.tokenize("Short"), GenerationParams(max_tokens=40, **GREEDY), events.append))
    s.step()  # the short prompt is read; it now generates
    long_prompt = model.vocab.tokenize("word " * 150)
    s.submit(Request(long_prompt, GenerationParams(max_tokens=2, **GREEDY), lambda e: None))
    sizes = []
    for _ in range(5):
        before = len(events)
        s.step()
        sizes.append(s.batch.n_tokens)
        assert len(events) == before + 1  # the running stream got its token this step
    assert max(sizes) <= 1 + 16
    s.ctx.close()


def test_engine_thread_serves_submissions_and_bounds_its_queue(model):
    ctx = Context(model, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=2)
    engine = Engine(ctx, max_queue=1)
    try:
        done = threading.Event()
        results = []

        def sink(event):
            results.append(event)
            if isinstance(event, Done):
                done.set()

        engine.submit(model.vocab.tokenize("Hello"), GenerationParams(max_tokens=40), sink)
        blocked = []
        for _ in range(3):
            try:
                engine.submit(model.vocab.tokenize("Queued"), GenerationParams(max_tokens=1), lambda e: None)
            except QueueFullError as e:
                blocked.append(e)
        assert blocked and "limit is 1" in str(blocked[0])
        with pytest.raises(PromptTooLongError, match="holds 256"):
            engine.submit([model.vocab.bos] * 300, GenerationParams(), lambda e: None)
        assert done.wait(60)
        assert isinstance(results[-1], Done) and results[-1].usage.completion_tokens == 40
    finally:
        engine.close()
        ctx.close()


def test_an_unrelated_prompt_takes_the_emptiest_slot_and_keeps_the_other_cache(model):
    s = scheduler(model, 2)
    long_prompt = model.vocab.tokenize("A long document about rivers and their deltas. " * 10)
    run(s, [long_prompt], [GenerationParams(max_tokens=1)])
    run(s, [model.vocab.tokenize("Unrelated short question")], [GenerationParams(max_tokens=1)])
    events = deque()
    request = Request(long_prompt, GenerationParams(max_tokens=1), events.append)
    s.submit(request)
    while s.has_work:
        s.step()
    assert request.usage.cached_tokens == len(long_prompt) - 1
    s.ctx.close()


def test_a_closed_engine_refuses_work_and_answers_what_it_held(model):
    ctx = Context(model, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=2)
    engine = Engine(ctx)
    engine.close()
    with pytest.raises(HeliosError, match="shutting down"):
        engine.submit(model.vocab.tokenize("Hello"), GenerationParams(max_tokens=1), lambda e: None)
    ctx.close()
