"""Connection limits uvicorn lacks: a deadline for request headers, and a cap on open connections.

uvicorn (h11) waits for a request's headers for as long as the client
keeps the connection open, so a client sending a byte every few seconds
holds a connection (and a file descriptor) forever. GuardedH11Protocol
gives every request `header_timeout` seconds, counted from the moment the
connection opens or the previous response on it ends, to finish its
headers; after that the connection is closed (with a 408 when part of a
request had come). The body has its own deadline (limits.py).

Over `max_connections` open connections a request is not refused here but
marked in `scope["extensions"]`, so the app answers it (admission.py) in
OpenAI's shape and counts it in /metrics like any other response.
"""

from __future__ import annotations

import asyncio

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from helios_http.errors import APIError

OVER_CAPACITY = "helios.over_capacity"  # scope["extensions"] key: more connections are open than allowed


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap.

    Give it to uvicorn as `Config(http=functools.partial(GuardedH11Protocol, header_timeout=..., max_connections=...))`.
    """

    def __init__(
        self, config, server_state, app_state, _loop=None, *, header_timeout: float, max_connections: int | None
    ):
        """header_timeout: seconds for a request's headers. max_connections: open connections served, None = any."""
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.limit_concurrency = None  # our cap replaces uvicorn's plain-text 503
        self._header_clock: asyncio.TimerHandle | None = None
        self._inner_app, self.app = self.app, self._app_told_of_capacity

    # --- the connection cap ---------------------------------------------------------------

    async def _app_told_of_capacity(self, scope, receive, send):
        # self.connections holds every open connection of the server, this one included.
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            scope.setdefault("extensions", {})[OVER_CAPACITY] = True
        await self._inner_app(scope, receive, send)

    # --- the header deadline -----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_header_clock()

    def handle_events(self) -> None:
        super().handle_events()
        if self._serving():
            self._stop_header_clock()

    def on_response_complete(self) -> None:
        # The next request on a kept-alive connection gets a deadline of its own. Started
        # before uvicorn looks for a pipelined request, whose headers stop it again.
        self._start_header_clock()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _serving(self) -> bool:
        """True from the end of a request's headers until its response is complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def _start_header_clock(self) -> None:
        self._stop_header_clock()
        self._header_clock = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        if self.transport.is_closing() or self._serving():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            # Part of a request came: tell the client why, before h11 has a request to answer.
            self.transport.write(_request_timeout_response(self.header_timeout))
        self.transport.close()


def _request_timeout_response(timeout: float) -> bytes:
    body = orjson.dumps(
        APIError(408, f"the request headers did not arrive within {timeout:g} s", code="request_timeout").body()
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body
