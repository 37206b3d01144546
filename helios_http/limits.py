"""Request bodies: at most `max_bytes`, and all of it within `timeout` seconds.

A Content-Length over the limit is refused before a byte of the body is
read. A body without one (chunked) is counted as it arrives and refused the
moment it passes the limit, so memory never holds more than the limit. A
body that has not arrived in full within the timeout is refused too, so a
client trickling bytes cannot hold a request open. Each refusal closes the
connection: the rest of the body is still on the wire.

Handlers read bodies through `receive`, so a refusal mid-body surfaces as an
APIError where the handler awaits `request.body()` and is answered by the
app's APIError handler like any other client mistake.
"""

from __future__ import annotations

import asyncio

from helios_http.errors import CLOSE_CONNECTION, APIError

MiB = 1024 * 1024


class BodyLimits:
    """ASGI middleware bounding the size of a request body and the time it takes to arrive."""

    def __init__(self, app, *, max_bytes: int, timeout: float):
        """max_bytes: the largest body taken, in bytes. timeout: seconds for the whole body to arrive."""
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await self._too_large().response()(scope, receive, send)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        complete = False

        async def bounded_receive():
            nonlocal received, complete
            if complete:  # after the body, receive only reports a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except asyncio.TimeoutError:
                raise self._timed_out() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than this server takes ({_size(self.max_bytes)})",
            code="request_too_large",
            headers=CLOSE_CONNECTION,
        )

    def _timed_out(self) -> APIError:
        return APIError(
            408,
            f"the request body did not arrive within {self.timeout:g} s",
            code="request_timeout",
            headers=CLOSE_CONNECTION,
        )


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # h11 refuses these before us; other servers may not
                return None
    return None


def _size(n_bytes: int) -> str:
    return f"{n_bytes / MiB:g} MiB" if n_bytes >= MiB else f"{n_bytes} bytes"
