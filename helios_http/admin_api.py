"""The server's own endpoints: GET /v1/models, /health and /metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from helios_http.responses import json_response
from helios_http.state import ServerState, loading_error


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    return json_response(
        {
            "object": "list",
            "data": [
                {"id": state.model_id, "object": "model", "created": int(state.metrics.started), "owned_by": "helios"}
            ],
        }
    )


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    if state.engine is None:
        return loading_error(state).response()
    return json_response({"status": "ok"})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    return Response(state.metrics.render(state.engine), media_type="text/plain; version=0.0.4")
