"""From asyncio handlers to the engine thread and back.

The engine calls a request's sink on its own thread. The sinks of every
request of one event loop post into that loop's `Dispatcher`, which wakes
the loop once per burst of events (an engine step's tokens for every request
it batched, however many) rather than once per token; the loop then hands
each handler its events, and a handler takes them without awaiting per
event. Handlers never block the loop, and the engine never waits on a slow
client (events queue up in the handler's inbox).

The one bridge for every worker thread (helios_core.worker): `run_jobs` for the engine's
requests, `run_job` for a job that ends with one callback (an embedding job).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from helios_core.engine import Done, Engine, Event, Request
from helios_core.generate import GenerationParams

Job = tuple[int, Sequence[int], GenerationParams]  # (choice index, prompt tokens, params)

# How often a non-streamed request checks that its client is still there.
DISCONNECT_POLL_SECONDS = 0.5

Disconnected = Callable[[], Awaitable[bool]]  # whether the client went away (Starlette's is_disconnected)


async def run_jobs(
    engine: Engine, jobs: list[Job], disconnected: Disconnected | None = None
) -> AsyncIterator[tuple[int, Event]]:
    """Submit every job, then yield (choice index, event) as the engine produces them.

    Submission errors (queue full, prompt too long) raise before anything is
    yielded, after cancelling the jobs already submitted. Leaving the
    iteration early (a client that went away) cancels whatever still runs.
    """
    loop = asyncio.get_running_loop()
    dispatcher = dispatcher_for(loop, engine)
    inbox = Inbox(loop)
    requests: list[Request] = []

    def sink_for(index: int):
        return lambda event: dispatcher.post(inbox, index, event)

    sinks = []
    try:
        for index, prompt, params in jobs:
            sink = sink_for(index)
            requests.append(engine.submit(prompt, params, sink))
            IN_FLIGHT[id(sink)] = sink
            sinks.append(sink)
        remaining = len(requests)
        if not remaining:
            return
        async for index, event in _received(inbox, disconnected):
            yield index, event
            remaining -= isinstance(event, Done)
            if not remaining:
                return
    finally:
        for request in requests:
            request.cancel()  # no-op for requests that already finished
        for sink in sinks:
            IN_FLIGHT.pop(id(sink), None)


T = TypeVar("T")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


async def run_job(
    submit: Callable[[Callable[[T], None]], Cancellable], disconnected: Disconnected | None = None
) -> T | None:
    """Start a job on a worker thread and await the one value it ends with; None if the client went away first.

    submit(on_done) starts it (raising at once for a refusal) and returns something to cancel; the
    worker calls on_done(value) on its thread. Leaving early cancels the job (a no-op once done).
    """
    loop = asyncio.get_running_loop()
    dispatcher, inbox = dispatcher_for(loop), Inbox(loop)
    job = submit(lambda value: dispatcher.post(inbox, 0, value))
    try:
        async for _, value in _received(inbox, disconnected):
            return value
        return None
    finally:
        job.cancel()


async def _received(inbox: Inbox, disconnected: Disconnected | None) -> AsyncIterator[tuple[int, Event]]:
    """What arrives in `inbox`, as it comes; ends when `disconnected` says the client went away."""
    loop = inbox.loop
    # Check on a clock, not only when events pause: tokens may flow every few ms.
    next_check = loop.time() + DISCONNECT_POLL_SECONDS if disconnected is not None else None
    items = inbox.items
    while True:
        if next_check is not None and loop.time() >= next_check:
            if await disconnected():
                return
            next_check = loop.time() + DISCONNECT_POLL_SECONDS
        if not items:
            await inbox.wait(next_check)
            continue
        yield items.popleft()


class Dispatcher:
    """Events from other threads into one event loop: one wake-up per engine step, not one per event.

    Events posted on an attached engine's thread wait for the end of its step
    (Engine.add_step_listener), when flush() hands them all on in one wake-up;
    events from any other thread schedule one at once (at most one pending).
    `wakeups` counts them.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.wakeups = 0
        self._lock = threading.Lock()
        self._pending: list[tuple[Inbox, int, Event]] = []
        self._scheduled = False
        self._engine_threads: set[int] = set()
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()

    def attach(self, engine: Engine) -> None:
        """Batch what `engine`'s thread posts by its steps (once per engine)."""
        if engine not in self._engines:
            self._engines.add(engine)
            self._engine_threads.add(engine.thread_id)
            engine.add_step_listener(self.flush)

    def post(self, inbox: Inbox, index: int, event: Event) -> None:
        """From any thread."""
        with self._lock:
            self._pending.append((inbox, index, event))
            if self._scheduled or threading.get_ident() in self._engine_threads:
                return
            self._scheduled = True
        self._schedule()

    def flush(self) -> None:
        """Hand on what is pending in one wake-up (the end of an engine step)."""
        with self._lock:
            if self._scheduled or not self._pending:
                return
            self._scheduled = True
        self._schedule()

    def _schedule(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed: nobody is left to read these events
            with self._lock:
                self._pending.clear()
                self._scheduled = False
            raise

    def _drain(self) -> None:
        self.wakeups += 1
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        for inbox, index, event in batch:
            inbox.put(index, event)


def dispatcher_for(loop: asyncio.AbstractEventLoop, engine: Engine | None = None) -> Dispatcher:
    """The one Dispatcher of `loop`, made on first use; attached to `engine` when one is given."""
    dispatcher = _DISPATCHERS.get(loop)
    if dispatcher is None:
        dispatcher = _DISPATCHERS[loop] = Dispatcher(loop)
    if engine is not None:
        dispatcher.attach(engine)
    return dispatcher


class Inbox:
    """One handler's events, filled on the loop's thread; wait() returns once there are some."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.items: deque[tuple[int, Event]] = deque()
        self.loop = loop
        self._waiter: asyncio.Future | None = None

    def put(self, index: int, event: Event) -> None:
        self.items.append((index, event))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float | None) -> None:
        """Until an event arrives, or the loop's clock reaches `deadline` (None: no deadline)."""
        waiter = self._waiter = self.loop.create_future()
        timer = None if deadline is None else self.loop.call_at(deadline, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


_DISPATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dispatcher] = weakref.WeakKeyDictionary()


# The sinks of every job submitted and not yet answered, for end_in_flight.
IN_FLIGHT: dict[int, Callable[[Event], None]] = {}


def end_in_flight(error: Exception, timeout: float) -> bool:
    """End every job in flight with `error`, from any thread; wait up to `timeout` s for their answers to go out.

    For a process about to exit (a backend failed for good): the engine thread is stuck
    and will never deliver their Done, so this does. True if every handler finished.
    """
    for sink in list(IN_FLIGHT.values()):
        sink(Done(None, error))
    deadline = time.monotonic() + timeout
    while IN_FLIGHT and time.monotonic() < deadline:
        time.sleep(0.05)
    return not IN_FLIGHT
