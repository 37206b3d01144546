"""The engine's queue and shutdown: what counts as waiting, and how requests end when it stops.

A sampler that waits on an event holds the engine thread inside a step, so
every test here is driven by events, never by how fast the machine is.
"""

from __future__ import annotations

import threading

import pytest

from helios_core.context import Context
from helios_core.engine import Done, Engine, EngineShutdownError, QueueFullError
from helios_core.generate import GenerationParams
from tests.conftest import THREADS

WAIT = 120  # seconds: a failure bound only


class Held:
    """A sampler that signals `inside` and then waits for `release` before each token."""

    def __init__(self):
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, logits, state) -> int:
        self.inside.set()
        assert self.release.wait(WAIT)
        return 5  # an ordinary token: never an end of generation


class Recorder:
    def __init__(self):
        self.events = []
        self.done = threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, Done):
            self.done.set()

    def finish(self) -> Done:
        assert self.done.wait(WAIT)
        return self.events[-1]


@pytest.fixture
def engine_for(model):
    made = []

    def make(**kw) -> Engine:
        ctx = Context(model, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=THREADS)
        engine = Engine(ctx, **kw)
        made.append((engine, ctx))
        return engine

    yield make
    for engine, ctx in made:
        engine.close()
        ctx.close()


def short(**kw) -> GenerationParams:
    return GenerationParams(max_tokens=2, sampler=lambda logits, state: 5, **kw)


def test_a_running_request_does_not_count_as_queued(model, engine_for):
    engine = engine_for(max_queue=2)
    held = Held()
    running = Recorder()
    engine.submit(model.vocab.tokenize("Running"), GenerationParams(max_tokens=2, sampler=held), running)
    assert held.inside.wait(WAIT)  # admitted to the only slot, and inside its first step
    assert engine.queued == 0
    waiting = [Recorder(), Recorder()]
    for sink in waiting:
        engine.submit(model.vocab.tokenize("Waiting"), short(), sink)
    assert engine.queued == 2
    with pytest.raises(QueueFullError, match="limit is 2"):
        engine.submit(model.vocab.tokenize("One too many"), short(), Recorder())
    held.release.set()
    assert running.finish().finish_reason == "length"
    assert [sink.finish().finish_reason for sink in waiting] == ["length", "length"]
    assert engine.wait_idle(WAIT) and engine.queued == 0


def test_stop_accepting_refuses_new_work_ends_the_waiting_and_lets_the_running_finish(model, engine_for):
    engine = engine_for()
    held = Held()
    running, waiting = Recorder(), Recorder()
    engine.submit(model.vocab.tokenize("Running"), GenerationParams(max_tokens=3, sampler=held), running)
    assert held.inside.wait(WAIT)
    engine.submit(model.vocab.tokenize("Waiting"), short(), waiting)
    engine.stop_accepting()
    with pytest.raises(EngineShutdownError):
        engine.submit(model.vocab.tokenize("Late"), short(), Recorder())
    held.release.set()
    assert isinstance(waiting.finish().error, EngineShutdownError)
    finished = running.finish()
    assert finished.error is None and finished.finish_reason == "length"
    assert engine.wait_idle(WAIT)


def test_wait_idle_times_out_while_a_request_runs(model, engine_for):
    engine = engine_for()
    held = Held()
    engine.submit(model.vocab.tokenize("Running"), GenerationParams(max_tokens=2, sampler=held), Recorder())
    assert held.inside.wait(WAIT)
    assert engine.wait_idle(0.05) is False  # it cannot be idle: the sampler holds its request
    held.release.set()
    assert engine.wait_idle(WAIT) is True


def test_close_ends_the_running_request_with_a_shutdown_error(model, engine_for):
    engine = engine_for()
    held = Held()
    running = Recorder()
    engine.submit(model.vocab.tokenize("Running"), GenerationParams(max_tokens=50, sampler=held), running)
    assert held.inside.wait(WAIT)
    closer = threading.Thread(target=engine.close)
    closer.start()
    refused = threading.Event()
    while not refused.wait(0.01):  # until close() has begun: it stops accepting first
        try:
            engine.submit(model.vocab.tokenize("Probe"), short(), Recorder())
        except EngineShutdownError:
            refused.set()
        except QueueFullError:
            pass
    held.release.set()
    closer.join(WAIT)
    assert isinstance(running.finish().error, EngineShutdownError)
    assert sum(not isinstance(e, Done) for e in running.events) < 50
