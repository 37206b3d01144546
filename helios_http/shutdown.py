"""Graceful shutdown: drain the engine before uvicorn cancels anything.

On SIGTERM (or Ctrl+C) uvicorn's own shutdown waits a while for responses
and then cancels the handlers, so a stream would end with no final event.
DrainingServer does the drain first, while every handler still runs:

1. stop taking requests: new ones get a 503 (admission.py), and requests
   still waiting for a slot end at once with EngineShutdownError (a 503);
2. let running generations finish within `grace` seconds;
3. end whatever still runs: a stream gets the error event and `data: [DONE]`,
   a whole response a 503.

Then uvicorn's shutdown closes the connections once their responses are
written, with `timeout_graceful_shutdown` only as a backstop for a client
that reads too slowly.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from helios_core.engine import Engine

logger = logging.getLogger("helios.http")

# wait_idle() blocks a worker thread; waking at this period lets a second Ctrl+C cut the grace short.
_POLL_SECONDS = 0.25


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose shutdown first drains the engine returned by `engine()`."""

    def __init__(self, config: uvicorn.Config, *, engine, start_draining, grace: float):
        """engine: returns the Engine, or None while the model loads. start_draining: makes the app refuse
        new requests. grace: seconds running generations get to finish."""
        super().__init__(config)
        self._engine = engine
        self._start_draining = start_draining
        self.grace = grace

    async def shutdown(self, sockets=None) -> None:
        await self.drain()
        await super().shutdown(sockets)

    async def drain(self) -> None:
        self._start_draining()
        engine: Engine | None = self._engine()
        if engine is None:  # the model never loaded: nothing runs
            return
        logger.info(
            "helios-engine: shutting down; %d running request(s) get up to %g s to finish, %d waiting are refused",
            engine.busy_slots,
            self.grace,
            engine.queued,
        )
        engine.stop_accepting()
        # Idle kept-alive connections close now; busy ones once their response is written.
        for connection in list(self.server_state.connections):
            connection.shutdown()
        if not await self._wait_idle(engine):
            logger.warning("helios-engine: requests still running after the %g s grace are ended", self.grace)
        await asyncio.to_thread(engine.close)

    async def _wait_idle(self, engine: Engine) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        while not self.force_exit:
            left = deadline - loop.time()
            if await asyncio.to_thread(engine.wait_idle, max(0.0, min(left, _POLL_SECONDS))):
                return True
            if left <= _POLL_SECONDS:
                return False
        return False
