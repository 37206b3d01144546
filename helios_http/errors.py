"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}}.

A client's mistake is a 4xx with a message that says what to fix; anything
else is a 500 with a generic message, and the traceback stays in our log.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from helios_core.engine import EngineShutdownError
from helios_core.errors import BackendError

logger = logging.getLogger("helios.http")

# nginx's "client closed request": recorded in /metrics, never sent (nobody is left to read it).
CLIENT_CLOSED_REQUEST = 499

# For answers given before the request body was read: the rest of it is still on
# the wire, so the connection cannot carry another request.
CLOSE_CONNECTION = {"Connection": "close"}


class APIError(Exception):
    """An error to send to the client as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()), status_code=self.status, headers=self.headers, media_type="application/json"
        )


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a field the client got wrong."""
    return APIError(400, message, param=param, code=code)


def shutting_down(message: str = "the server is shutting down; retry on another instance") -> APIError:
    """A 503 for work refused or ended because the server is stopping."""
    return APIError(503, message, type="service_unavailable", code="shutting_down", headers=CLOSE_CONNECTION)


def engine_error(error: Exception) -> APIError:
    """The error a generation ended with after it was submitted (its Done.error)."""
    if isinstance(error, EngineShutdownError):
        return shutting_down(str(error))
    if isinstance(error, BackendError):
        # The server exits next, for its supervisor to restart it: the client may retry elsewhere.
        return APIError(503, f"the server's backend failed: {error}", type="server_error", code="backend_failed")
    # Client mistakes are refused before submission; what fails later is ours.
    return APIError(500, f"generation failed: {error}", type="server_error")


_HTTP_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


async def api_error_handler(request: Request, exc: APIError) -> Response:
    return exc.response()


async def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    message = {
        404: f"no route for {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return APIError(
        exc.status_code,
        message,
        type=_HTTP_TYPES.get(exc.status_code, "invalid_request_error"),
        headers=getattr(exc, "headers", None),
    ).response()


async def client_disconnected_handler(request: Request, exc: ClientDisconnect) -> Response:
    # The client hung up while sending its body: nothing went wrong on our side.
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return APIError(500, "internal server error (details are in the server log)", type="server_error").response()
