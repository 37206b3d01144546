"""llama-server's small endpoints around the chat template: POST /apply-template and GET /props.

- POST /apply-template takes a chat completions body and answers {"prompt": TEXT}: the text the
  template renders for its messages and tools, without generating (llama-server's shape).
- GET /props answers what llama-server's web UI and clients read from it: the chat template,
  the context size per slot, the slot count, the default generation settings, the build.
"""

from __future__ import annotations

import dataclasses

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from helios_core import backend, chat
from helios_core.sequence import GenerationParams
from helios_http import media
from helios_http.chat_api import render_text
from helios_http.responses import json_response
from helios_http.schemas import parse_chat, parse_json
from helios_http.state import ServerState


async def apply_template(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    parsed = parse_chat(parse_json(await request.body()))
    model, _ = state.ready_engine()
    _, text = await run_in_threadpool(render_text, model, state.chat_template, parsed, state.reasoning_budget)
    return json_response({"prompt": text.replace(media.SENTINEL, "<__media__>")})  # llama-server's marker


async def props(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    model, engine = state.ready_engine()
    loaded = await run_in_threadpool(chat.load, model, state.chat_template)
    vocab = model.vocab
    return json_response(
        {
            "default_generation_settings": {"params": _default_params(), "n_ctx": engine.n_ctx_per_seq},
            "total_slots": engine.n_slots,
            "model_alias": state.model_id,
            "model_path": str(model.path),
            "modalities": {
                "vision": "image" in state.media.modalities,
                "video": False,
                "audio": "audio" in state.media.modalities,
            },
            # A built-in template has no Jinja text: llama.cpp renders it by name, and so do we.
            "chat_template": loaded.source if loaded.source is not None else loaded.builtin_name,
            "bos_token": _piece(vocab, vocab.bos),
            "eos_token": _piece(vocab, vocab.eos),
            "plugins": state.plugins.describe(),  # helios's own: --sampler, --processor, --default-plugins
            "build_info": f"helios-engine {backend.version()}; {backend.system_info().strip()}",
            "endpoint_slots": False,
            "endpoint_props": False,
            "endpoint_metrics": True,
            "is_sleeping": False,
        }
    )


def _default_params() -> dict:
    """A request's settings when it names none: GenerationParams' plain fields (no callables, no constraint)."""
    fields = dataclasses.asdict(GenerationParams())
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in fields.items()
        if isinstance(v, int | float | str | bool | tuple | type(None)) and k not in ("sampler", "constraint")
    }


def _piece(vocab, token: int) -> str:
    return vocab.token_to_piece(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""
