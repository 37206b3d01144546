"""SIGTERM's drain (helios_http/lifecycle.py) on an engine over a scripted runner: no model, no process.

HeliosServer.drain() is what SIGTERM runs before uvicorn's own shutdown. Here it runs on the app
in process (httpx over ASGI), with an Engine whose runner answers from a rule and takes a few
milliseconds a step: the short request needs a handful of steps, the long ones more steps than
the grace holds at any speed. The runner holds the engine between steps while the requests
arrive, so the short one is running, and not yet done, when the drain begins.
tests/test_serve_lifecycle.py keeps one real process's SIGTERM.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import uvicorn

from helios_core.engine import Engine
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_http.app import build_app
from helios_http.lifecycle import HeliosServer
from helios_http.state import ServerState
from tests.scripted_runner import ScriptedRunner, peaked

GRACE = 0.25  # seconds: the short request needs 4 steps, the long ones LONG steps (20 s at least)
STEP_SECONDS = 0.002
LONG = 10_000
SHORT = {"prompt": "Count slowly:", "max_tokens": 3, "temperature": 0.0}


@pytest.fixture(scope="module")
def vocab_model():
    with Model(default_model_path(), vocab_only=True) as m:
        yield m


def never_ending(n_vocab: int):
    """A token that is no end of generation after every token: requests end by their limits alone."""
    row = peaked(n_vocab, {1234: 5.0})
    return lambda held: row


async def _until(condition, what: str) -> None:
    for _ in range(2000):  # 20 s at most: a loaded machine, not a clock this test races
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"waited for {what}")


def test_a_drain_finishes_running_requests_refuses_waiting_ones_and_ends_the_rest_at_the_grace(vocab_model):
    runner = ScriptedRunner(
        vocab_model, never_ending(vocab_model.vocab.n_vocab), n_seq_max=3, n_ctx_seq=2 * LONG, step_seconds=STEP_SECONDS
    )
    engine = Engine(runner, n_ctx_per_seq=2 * LONG)
    state = ServerState(model_id="m", model=vocab_model, engine=engine)
    server = HeliosServer(uvicorn.Config(build_app(state)), state=state, load=lambda: None, grace=GRACE)
    long = {"prompt": "Tell an endless story:", "max_tokens": LONG, "temperature": 0.0}

    async def scenario():
        transport = httpx.ASGITransport(app=build_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://helios") as client:

            def post(body: dict, stream: bool = False):
                return asyncio.create_task(client.post("/v1/completions", json={**body, "stream": stream}))

            long_stream, long_whole = post(long, stream=True), post(long)
            await _until(lambda: engine.busy_slots == 2, "the long requests to take their slots")
            # Held between steps from here, so the short request runs (and cannot finish) before the drain.
            runner.hold()
            await _until(lambda: runner.blocked, "the engine thread to wait in a decode")
            short_stream = post(SHORT, stream=True)
            await _until(lambda: engine.queued == 1, "the short stream to be submitted")
            runner.allow(1)
            await _until(lambda: engine.busy_slots == 3 and runner.blocked, "the short stream to take the last slot")
            queued = [post(SHORT), post(SHORT, stream=True)]
            await _until(lambda: engine.queued == 2, "two requests waiting for a slot")

            draining = asyncio.create_task(server.drain())
            await _until(lambda: state.draining, "the drain to begin")
            runner.run_free()
            await _until(lambda: engine.queued == 0, "the waiting requests to be refused")
            health = await client.get("/health")  # during the grace (or after it: the answers are the same)
            late = await client.post("/v1/completions", json=SHORT)
            await draining
            return await asyncio.gather(long_stream, long_whole, short_stream, *queued), health, late

    (long_stream, long_whole, short_stream, *queued), health, late = asyncio.run(scenario())
    # Waiting requests are refused with a status rather than a stream; so are new ones, and /health says 503.
    for refused in (*queued, late):
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert health.status_code == 503
    # The short stream finished within the grace, whole.
    finished = _events(short_stream)
    assert finished[-1]["choices"][0]["finish_reason"] == "length" and "error" not in json.dumps(finished)
    # The long ones were ended at the grace's end: the stream with the error event and [DONE], the other a 503.
    cut = _events(long_stream)
    assert cut[-1]["error"]["code"] == "shutting_down" and cut[-1]["error"]["type"] == "service_unavailable"
    assert len(cut) > 1  # it had been streaming
    assert long_whole.status_code == 503 and long_whole.json()["error"]["code"] == "shutting_down"
    assert engine.busy_slots == 0 and engine.queued == 0


def _events(response: httpx.Response) -> list[dict]:
    lines = [line for line in response.text.splitlines() if line]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
