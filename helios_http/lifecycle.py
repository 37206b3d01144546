"""The server's life: load the model once listening, and drain the engine before uvicorn cancels anything.

Start: uvicorn binds the address first, so a port in use fails at once;
then the model loads on a background thread while /health answers 503. A
model that fails to load stops the server (serve() exits 1 with the reason).

Stop (SIGTERM or Ctrl+C): uvicorn's own shutdown waits a while for
responses and then cancels the handlers, so a stream would end with no final
event. HeliosServer drains first, while every handler still runs:

1. stop taking requests: new ones get a 503 (admission.py), and requests
   still waiting for a slot end at once with EngineShutdownError (a 503);
2. let running generations finish within `grace` seconds;
3. end whatever still runs: a stream gets the error event and `data: [DONE]`,
   a whole response a 503.

Then uvicorn's shutdown closes the connections once their responses are
written, with `timeout_graceful_shutdown` only as a backstop for a client
that reads too slowly, and last the engine's context and the model are freed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import uvicorn

from helios_core.engine import Engine
from helios_http.state import ServerState

logger = logging.getLogger("helios.http")

# wait_idle() blocks a worker thread; waking at this period lets a second Ctrl+C cut the grace short.
_POLL_SECONDS = 0.25


class HeliosServer(uvicorn.Server):
    """uvicorn.Server that runs `load` once listening and drains `state.engine` before shutting down."""

    def __init__(self, config: uvicorn.Config, *, state: ServerState, load: Callable[[], None], grace: float):
        """load: fills state.model and state.engine, raising on failure. grace: seconds running requests get."""
        super().__init__(config)
        self.state = state
        self.load = load
        self.grace = grace
        self._loader: threading.Thread | None = None

    # --- start ---------------------------------------------------------------------------

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)  # exits the process if the address cannot be bound
        self._loader = threading.Thread(target=self._load, name="helios-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        try:
            self.load()
        except Exception as error:
            self.state.load_error = error
            self.should_exit = True  # uvicorn's main loop looks every 0.1 s

    # --- stop ------------------------------------------------------------------------------

    async def shutdown(self, sockets=None) -> None:
        await self.drain()
        await super().shutdown(sockets)
        await asyncio.to_thread(self._release)

    async def drain(self) -> None:
        self.state.draining = True
        engine = self.state.engine
        if engine is None:  # still loading, or failed: nothing runs
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
        if self.state.persist is not None:
            await asyncio.to_thread(self.state.persist)
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

    def _release(self) -> None:
        """Free engine, contexts and models, last opened first, once no handler runs (a loading model first ends)."""
        if self._loader is not None:
            self._loader.join()
        self.state.runtime.close()
