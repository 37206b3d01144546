"""The API key: `Authorization: Bearer <key>`, or Anthropic's `x-api-key: <key>`, on every request but the open paths.

Keys are compared in constant time. The scheme is case-insensitive (RFC
7235), a 401 says which scheme to use (WWW-Authenticate), and a request
carrying two Authorization headers is refused rather than judged by either
one: proxies and servers disagree on which of two wins. x-api-key is read only without an
Authorization header (Anthropic's clients send one or the other), under the same rules.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from helios_http.errors import APIError


class ApiKeyAuth:
    """ASGI middleware: 401 without the key; `open_paths` (e.g. /health) need none."""

    def __init__(self, app, *, api_key: str, open_paths: Collection[str]):
        self.app = app
        self.expected = api_key.encode()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            refusal = self._refusal(scope)
            if refusal is not None:
                return await refusal.response()(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, scope) -> APIError | None:
        values = [value for name, value in scope["headers"] if name == b"authorization"]
        keys = [value for name, value in scope["headers"] if name == b"x-api-key"]
        if len(values) > 1 or (not values and len(keys) > 1):
            header = "Authorization" if len(values) > 1 else "x-api-key"
            return APIError(400, f"send one {header} header, not several", code="invalid_authorization_header")
        if values:
            scheme, _, token = values[0].partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(b" "), self.expected):
                return None
        elif keys and hmac.compare_digest(keys[0].strip(b" "), self.expected):
            return None
        return APIError(
            401,
            "a valid API key is required: send Authorization: Bearer <key> (or x-api-key: <key>)",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
