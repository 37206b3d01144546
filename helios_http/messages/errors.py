"""Anthropic's error shape on the Messages paths: {"type": "error", "error": {"type", "message"}}.

One mapping for every error on these paths, whoever raised it: a handler's APIError, the app's
exception handlers (404, 405, 500), and the middleware inside this one (the API key's 401, the
body limits' 413 and 408, admission's 503). The status stays; the type is Anthropic's for it.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request

from helios_http.errors import APIError, unexpected_error_handler

PREFIX = "/v1/messages"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict:
    """Anthropic's error body for an answer with this status."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_event(error: APIError) -> dict:
    """The `error` event that ends a stream that has already started."""
    return error_body(error.status, error.message)


def is_messages_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class AnthropicErrors:
    """ASGI middleware: on the Messages paths, error bodies (status >= 400) rewritten into Anthropic's shape."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not is_messages_path(scope["path"]):
            return await self.app(scope, receive, send)
        held: dict | None = None  # an error's start, sent once its body is rewritten
        chunks: list[bytes] = []
        started = False

        async def rewriting_send(message):
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _rewritten(held["status"], b"".join(chunks))
                headers = [(k, v) for k, v in held["headers"] if k != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, rewriting_send)
        except Exception as exc:
            # Unexpected errors would reach Starlette's outermost handler, past this mapping: answer here.
            if started:
                raise
            response = await unexpected_error_handler(Request(scope), exc)
            await response(scope, receive, rewriting_send)


def _rewritten(status: int, body: bytes) -> bytes:
    try:
        error = orjson.loads(body).get("error") if body else None
    except (orjson.JSONDecodeError, AttributeError):
        return body  # not an error body of ours: left as it is
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return body
    return orjson.dumps(error_body(status, error["message"]))
