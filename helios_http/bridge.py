"""From asyncio handlers to the engine thread and back.

The engine calls a request's sink on its own thread; the sink hands each
event to the event loop with call_soon_threadsafe, so handlers await
events without ever blocking the loop, and the engine never waits on a
slow client (events queue up in the handler's asyncio.Queue).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from helios_core.engine import Done, Engine, Event, Request
from helios_core.generate import GenerationParams

Job = tuple[int, Sequence[int], GenerationParams]  # (choice index, prompt tokens, params)

# How often a non-streamed request checks that its client is still there.
DISCONNECT_POLL_SECONDS = 0.5


async def run_jobs(
    engine: Engine, jobs: list[Job], disconnected: Callable[[], Awaitable[bool]] | None = None
) -> AsyncIterator[tuple[int, Event]]:
    """Submit every job, then yield (choice index, event) as the engine produces them.

    Submission errors (queue full, prompt too long) raise before anything is
    yielded, after cancelling the jobs already submitted. Leaving the
    iteration early (a client that went away) cancels whatever still runs.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    requests: list[Request] = []

    def sink_for(index: int):
        return lambda event: loop.call_soon_threadsafe(events.put_nowait, (index, event))

    sinks = []
    try:
        for index, prompt, params in jobs:
            sink = sink_for(index)
            requests.append(engine.submit(prompt, params, sink))
            IN_FLIGHT[id(sink)] = sink
            sinks.append(sink)
        remaining = len(requests)
        next_check = loop.time() + DISCONNECT_POLL_SECONDS
        while remaining:
            if disconnected is None:
                index, event = await events.get()
            else:
                # Check on a clock, not only when events pause: tokens may flow every few ms.
                if loop.time() >= next_check:
                    if await disconnected():
                        return
                    next_check = loop.time() + DISCONNECT_POLL_SECONDS
                try:
                    index, event = await asyncio.wait_for(events.get(), max(0.0, next_check - loop.time()))
                except asyncio.TimeoutError:
                    continue
            if isinstance(event, Done):
                remaining -= 1
            yield index, event
    finally:
        for request in requests:
            request.cancel()  # no-op for requests that already finished
        for sink in sinks:
            IN_FLIGHT.pop(id(sink), None)


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
