"""helios_http.bridge: engine events reach the event loop in one wake-up per burst, not one per token."""

from __future__ import annotations

import asyncio

from helios_core.context import Context
from helios_core.engine import Done, Engine
from helios_core.generate import GenerationParams
from helios_http.bridge import Inbox, dispatcher_for, run_jobs
from tests.conftest import THREADS


def test_a_burst_of_events_wakes_the_loop_once():
    async def burst() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        dispatcher, inbox = dispatcher_for(loop), Inbox(loop)
        before = dispatcher.wakeups
        for i in range(10):
            dispatcher.post(inbox, i, Done("stop"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return dispatcher.wakeups - before, len(inbox.items)

    assert asyncio.run(burst()) == (1, 10)


def test_batched_requests_wake_the_loop_far_less_than_once_per_event(model):
    ctx = Context(model, n_ctx=4 * 256, n_seq_max=4, n_batch=256, n_threads=THREADS)
    engine = Engine(ctx, backend_sampling=False)
    prompt = model.vocab.tokenize("Once upon a time")
    params = GenerationParams(max_tokens=12, temperature=0.0, ignore_eos=True)

    async def collect() -> tuple[list, int]:
        dispatcher = dispatcher_for(asyncio.get_running_loop())
        before = dispatcher.wakeups
        got = [item async for item in run_jobs(engine, [(i, prompt, params) for i in range(4)])]
        return got, dispatcher.wakeups - before

    try:
        events, wakeups = asyncio.run(collect())
    finally:
        engine.close()
        ctx.close()
    assert len(events) == 4 * 12 + 4
    assert sorted(index for index, event in events if isinstance(event, Done)) == [0, 1, 2, 3]
    # The four requests decode together: about one wake-up per step, where there are four tokens.
    assert wakeups <= len(events) // 2


def test_a_whole_answer_stops_when_its_client_leaves_while_tokens_flow(model):
    ctx = Context(model, n_ctx=512, n_threads=THREADS)
    engine = Engine(ctx)
    prompt = model.vocab.tokenize("Once upon a time")
    params = GenerationParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    asked = []

    async def gone() -> bool:
        asked.append(True)
        return True

    async def collect() -> list:
        return [item async for item in run_jobs(engine, [(0, prompt, params)], gone)]

    try:
        events = asyncio.run(collect())
    finally:
        engine.close()
        ctx.close()
    assert asked and not any(isinstance(event, Done) for _, event in events)
