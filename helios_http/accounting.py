"""Request accounting: the middleware that feeds the counters of /metrics (metrics.py) from every response."""

from __future__ import annotations

from collections.abc import Collection

from helios_http.metrics import Metrics


class RequestAccounting:
    """ASGI middleware: the in-flight gauge, and every response counted by path and status.

    Outermost of the app's own middleware, so refusals (503, 401, 413, ...) are
    counted too. Paths outside `known_paths` count as "other", so probes of
    random URLs cannot grow the counters without bound.
    """

    def __init__(self, app, *, metrics: Metrics, known_paths: Collection[str]):
        self.app = app
        self.metrics = metrics
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # what uvicorn answers if the app fails before starting a response

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.request_started()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope["path"]
            self.metrics.request_finished(path if path in self.known_paths else "other", status)
