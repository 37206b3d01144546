"""The scheduler: one decode per step for many sequences, prefix-matched slots, fairness."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import pytest

from helios_core.context import Context
from helios_core.engine import Done, Engine, PromptTooLongError, QueueFullError, Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.errors import HeliosError
from helios_core.generate import GenerationParams
from tests.conftest import THREADS, assert_logits_close, teacher_forced

GREEDY = dict(temperature=0.0)


def scheduler(model, slots: int, **kw) -> Scheduler:
    ctx = Context(model, n_ctx=512 * slots, n_seq_max=slots, n_batch=256, n_threads=THREADS)
    return Scheduler(LlamaRunner(ctx), n_ctx_per_seq=512, **kw)


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
    """Teacher-forced: every request follows a fixed token script, so rows are comparable step by step.

    llama.cpp's CPU kernels are not batch-invariant, so a sequence decoded beside
    others gets logits near, not equal to, its logits alone (LOGIT_TOLERANCE).
    """
    prompts = [model.vocab.tokenize(p) for p in PROMPTS]
    script = model.vocab.tokenize(" and then the story went on and on", add_special=False)[:8]

    alone = []
    for prompt in prompts:
        captured = []
        s = scheduler(model, 1)
        run(s, [prompt], [teacher_forced(script, captured)])
        s.runner.ctx.close()
        alone.append(captured)
    together = [[] for _ in prompts]
    s = scheduler(model, 4)
    run(s, prompts, [teacher_forced(script, c) for c in together])
    assert s.stats.batch_sequences / s.stats.steps > 3  # they really shared the decodes
    s.runner.ctx.close()

    for batched, own in zip(together, alone, strict=True):
        assert_logits_close(batched, own)
    # A row given to the wrong sequence would fail the tolerance, or land nearer another
    # sequence's row than its own. Drift leaves every row far nearer its own: measured at
    # most 0.13 of the distance to the nearest other sequence's row at the same step.
    for i, batched in enumerate(together):
        for step, row in enumerate(batched):
            own = float(np.abs(row - alone[i][step]).max())
            nearest_other = min(float(np.abs(row - alone[j][step]).max()) for j in range(len(prompts)) if j != i)
            assert own < 0.5 * nearest_other, f"sequence {i}, step {step}: {own:.3f} vs {nearest_other:.3f}"


def test_a_new_request_takes_the_slot_with_the_longest_common_prefix(model):
    s = scheduler(model, 2)
    system = model.vocab.tokenize("You are a helpful assistant who answers briefly and precisely. " * 3)
    other = model.vocab.tokenize("Completely different text about cooking pasta.")
    run(
        s,
        [system + model.vocab.tokenize(" Q1", add_special=False), other],
        [GenerationParams(max_tokens=2, **GREEDY)] * 2,
    )
    holder = next(slot for slot in s.slots if slot.cache.tokens[: len(system)] == system)
    bystander = next(slot for slot in s.slots if slot is not holder)
    follow_up = system + model.vocab.tokenize(" Q2", add_special=False)
    request = Request(follow_up, GenerationParams(max_tokens=2, **GREEDY), lambda e: None)
    s.submit(request)
    s.step()  # admits the follow-up and reads the rest of its prompt
    assert holder.cache.tokens[: len(follow_up)] == follow_up
    assert bystander.cache.tokens[: len(other)] == other  # the other slot's cache was left alone
    while s.has_work:
        s.step()
    assert request.usage.cached_tokens >= len(system)
    s.runner.ctx.close()


def test_requests_start_in_arrival_order(model):
    s = scheduler(model, 1)
    order = []
    for i in range(3):
        s.submit(
            Request(
                model.vocab.tokenize(f"Request number {i}"),
                GenerationParams(max_tokens=2, **GREEDY),
                lambda e, i=i: order.append(i) if isinstance(e, Done) else None,
            )
        )
    while s.has_work:
        s.step()
    assert order == [0, 1, 2]
    s.runner.ctx.close()


def test_cancel_frees_the_slot_before_the_next_step(model, no_eog):
    s = scheduler(model, 1)
    events = deque()
    params = GenerationParams(max_tokens=200, seed=1, logit_bias=no_eog)  # nothing but the cancel can end it
    request = Request(model.vocab.tokenize("Tell me a long story"), params, events.append)
    s.submit(request)
    for _ in range(4):
        s.step()
    request.cancel()
    s.step()
    assert s.busy_slots == 0
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "cancelled"
    generated = len(steps_of(events))
    assert generated <= 4
    s.runner.ctx.close()


def test_a_failing_custom_sampler_ends_only_its_request(model, no_eog):
    s = scheduler(model, 2)

    def broken(logits, state):
        raise RuntimeError("researcher bug")

    good, bad = run(
        s,
        [model.vocab.tokenize("Good"), model.vocab.tokenize("Bad")],
        [GenerationParams(max_tokens=4, logit_bias=no_eog, **GREEDY), GenerationParams(max_tokens=4, sampler=broken)],
    )
    assert good[-1].finish_reason == "length" and len(steps_of(good)) == 4
    assert isinstance(bad[-1].error, RuntimeError)
    s.runner.ctx.close()


def test_prompt_reading_is_bounded_while_others_generate(model, no_eog):
    s = scheduler(model, 2, prefill_per_step=16)
    events = deque()
    params = GenerationParams(max_tokens=40, logit_bias=no_eog, **GREEDY)
    s.submit(Request(model.vocab.tokenize("Short"), params, events.append))
    s.step()  # the short prompt is read; it now generates
    long_prompt = model.vocab.tokenize("word " * 150)
    s.submit(Request(long_prompt, GenerationParams(max_tokens=2, **GREEDY), lambda e: None))
    sizes = []
    for _ in range(5):
        before = len(events)
        s.step()
        sizes.append(s.runner.batch.n_tokens)
        assert len(events) == before + 1  # the running stream got its token this step
    assert max(sizes) <= 1 + 16
    s.runner.ctx.close()


def test_engine_thread_serves_submissions_and_bounds_its_queue(model, no_eog):
    ctx = Context(model, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=THREADS)
    engine = Engine(ctx, max_queue=1)
    release = threading.Event()
    try:
        done = threading.Event()
        results = []

        def sink(event):
            # Sinks run on the engine thread: holding the first event holds the engine
            # mid-step, so the queue cannot drain however fast this machine is.
            release.wait(300)
            results.append(event)
            if isinstance(event, Done):
                done.set()

        engine.submit(model.vocab.tokenize("Hello"), GenerationParams(max_tokens=40, seed=1, logit_bias=no_eog), sink)
        blocked = []
        for _ in range(3):
            try:
                engine.submit(model.vocab.tokenize("Queued"), GenerationParams(max_tokens=1), lambda e: None)
            except QueueFullError as e:
                blocked.append(e)
        assert blocked and "limit is 1" in str(blocked[0])
        with pytest.raises(PromptTooLongError, match="holds 256"):
            engine.submit([model.vocab.bos] * 300, GenerationParams(), lambda e: None)
        release.set()
        assert done.wait(300)
        assert isinstance(results[-1], Done) and results[-1].usage.completion_tokens == 40
    finally:
        release.set()
        engine.close()
        ctx.close()


def test_an_unrelated_prompt_takes_the_emptiest_slot_and_keeps_the_other_cache(model):
    s = scheduler(model, 2)
    long_prompt = model.vocab.tokenize("A long document about rivers and their deltas. " * 10)
    unrelated = model.vocab.tokenize("Unrelated short question")
    # One token each: a request that ends at once leaves exactly its prompt in its slot's cache.
    run(s, [long_prompt], [GenerationParams(max_tokens=1, **GREEDY)])
    run(s, [unrelated], [GenerationParams(max_tokens=1, **GREEDY)])
    assert sorted(slot.cache.tokens for slot in s.slots) == sorted([long_prompt, unrelated])
    request = Request(long_prompt, GenerationParams(max_tokens=1, **GREEDY), lambda e: None)
    s.submit(request)
    while s.has_work:
        s.step()
    assert request.usage.cached_tokens == len(long_prompt) - 1
    s.runner.ctx.close()


def test_a_closed_engine_refuses_work_and_answers_what_it_held(model):
    ctx = Context(model, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=THREADS)
    engine = Engine(ctx)
    engine.close()
    with pytest.raises(HeliosError, match="shutting down"):
        engine.submit(model.vocab.tokenize("Hello"), GenerationParams(max_tokens=1), lambda e: None)
    ctx.close()
