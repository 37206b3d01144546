"""The server's own endpoints: GET /v1/models (and /v1/models/{id}), /health and /metrics."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request
from starlette.responses import Response

from helios_http.errors import APIError
from helios_http.lora_api import model_ids
from helios_http.responses import json_response
from helios_http.state import ServerState, loading_error


async def models(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    # The model, then "BASE:ADAPTER" for each --lora adapter: a model name that picks the adapter.
    return json_response({"object": "list", "data": [_model_object(state, i) for i in model_ids(state)]})


async def model(request: Request) -> Response:
    """One model by id, as the openai SDK's models.retrieve() asks: the served one, or a 404."""
    state: ServerState = request.app.state.helios
    model_id = request.path_params["model_id"]
    if model_id not in model_ids(state):
        raise APIError(
            404,
            f"the model {model_id!r} does not exist here; this server serves {state.model_id!r}",
            param="model",
            code="model_not_found",
        )
    return json_response(_model_object(state, model_id))


def _model_object(state: ServerState, model_id: str) -> dict:
    entry = {"id": model_id, "object": "model", "created": int(state.metrics.started), "owned_by": "helios"}
    # What it reads besides text, as Ollama and LM Studio list it: ["text", "image", ...].
    return entry | {"modalities": ["text", *state.media.modalities]}


async def index(request: Request) -> Response:
    """The server's root: what it is and what it serves. Clients probe it (Claude Code sends HEAD /) to see
    that the base URL answers at all; llama-server answers it with its web page."""
    state: ServerState = request.app.state.helios
    return json_response(
        {"server": "helios-engine", "model": state.model_id, "ready": state.engine is not None, "health": "/health"}
    )


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    if state.engine is None:
        return loading_error(state).response()
    devices = [dataclasses.asdict(device) for device in state.devices]
    return json_response({"status": "ok", "devices": devices, "cpu_build": state.cpu_build})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    return Response(state.metrics.render(state.engine, state.devices), media_type="text/plain; version=0.0.4")
