"""Whether to take a request at all: not while the server drains, not over its connection cap.

Both refusals are 503s in OpenAI's shape that close the connection, so a
client (or a load balancer polling /health) moves on to another instance.
/metrics stays open while draining, so an operator can watch the drain.
"""

from __future__ import annotations

from collections.abc import Callable

from helios_http.connections import OVER_CAPACITY
from helios_http.errors import CLOSE_CONNECTION, APIError, shutting_down

RETRY_AFTER_SECONDS = 1
OPEN_WHILE_DRAINING = frozenset({"/metrics"})


class Admission:
    """ASGI middleware: 503 for requests the server will not take now."""

    def __init__(self, app, *, draining: Callable[[], bool]):
        self.app = app
        self.draining = draining

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                return await refusal.response()(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, scope) -> APIError | None:
        if self.draining() and scope["path"] not in OPEN_WHILE_DRAINING:
            return shutting_down()
        if scope.get("extensions", {}).get(OVER_CAPACITY):
            return APIError(
                503,
                "the server has as many open connections as it takes; retry shortly",
                type="service_unavailable",
                code="too_many_connections",
                headers={**CLOSE_CONNECTION, "Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return None
