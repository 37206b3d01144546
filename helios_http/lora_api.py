"""LoRA adapters over HTTP: GET and POST /lora-adapters (llama-server's shapes), and the set a request runs under.

Adapters are loaded at start-up (--lora PATH[:SCALE]); their ids are their order there.
A request runs under:
- its `lora` field, [{"id": 0, "scale": 0.5}, ...], when given and not empty: the listed
  adapters at those scales, the others off (llama-server's rule);
- else a model name "BASE:NAME" (the served model's id, a colon, an adapter's name: its
  file's stem), which /v1/models lists: that adapter at scale 1, the others off;
- else the server's default scales: --lora's, until POST /lora-adapters sets others.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from helios_core.lora import AdapterSet, adapter_set
from helios_http.errors import APIError, invalid
from helios_http.responses import json_response
from helios_http.sampling_fields import SamplingFields, lora_scales
from helios_http.state import ServerState


async def lora_adapters(request: Request) -> Response:
    """GET /lora-adapters: [{id, path, scale, name}], the scales being the defaults."""
    state = _loaded(request)
    return json_response(
        [
            {"id": i, "path": str(adapter.path), "scale": scale, "name": adapter.name}
            for i, (adapter, scale) in enumerate(zip(state.lora, state.lora_scales, strict=True))
        ]
    )


async def set_lora_adapters(request: Request) -> Response:
    """POST /lora-adapters, [{"id": 0, "scale": 0.2}, ...]: the default scales; adapters left out are off."""
    state = _loaded(request)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON: {e}") from None
    scales = lora_scales(body, None)
    _check_ids(state, scales, None)
    state.lora_scales = [scales.get(i, 0.0) for i in range(len(state.lora))]
    return json_response({"success": True})


def model_ids(state: ServerState) -> list[str]:
    """The served model's id, then "BASE:NAME" for each adapter: what /v1/models lists."""
    return [state.model_id] + [f"{state.model_id}:{adapter.name}" for adapter in state.lora]


def request_set(state: ServerState, sampling: SamplingFields) -> AdapterSet:
    """The adapters (with scales) a request runs under; a 400 (or 404 for a model name) for ones not served."""
    if sampling.lora:
        _check_ids(state, sampling.lora, "lora")
        return adapter_set((state.lora[i], scale) for i, scale in sampling.lora.items())
    model = sampling.model or ""
    model = state.model_names.mapped(model, model_ids(state)) or model  # --model-alias: a client's name, served
    base, sep, name = model.rpartition(":")
    if sep and base == state.model_id:
        for adapter in state.lora:
            if adapter.name == name:
                return adapter_set([(adapter, 1.0)])
        raise APIError(
            404,
            f"the model {model!r} does not exist here; this server serves {', '.join(map(repr, model_ids(state)))}",
            param="model",
            code="model_not_found",
        )
    return adapter_set(zip(state.lora, state.lora_scales, strict=True))


def _check_ids(state: ServerState, scales: dict[int, float], param: str | None) -> None:
    for adapter_id in scales:
        if adapter_id >= len(state.lora):
            served = f"ids 0 to {len(state.lora) - 1}" if state.lora else "none (start it with --lora)"
            raise invalid(
                f"{param or 'the request body'} names LoRA adapter {adapter_id}, but this server's "
                f"adapters are {served}",
                param,
            )


def _loaded(request: Request) -> ServerState:
    state: ServerState = request.app.state.helios
    state.ready_engine()  # a 503 while the model (and so the adapters) loads
    return state
