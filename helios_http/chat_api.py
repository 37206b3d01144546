"""OpenAI's chat completions: POST /v1/chat/completions.

The messages are rendered with the chat template and tokenized in the thread pool; generation
and the answer are shared with completions (generation.py).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from helios_core import chat
from helios_core.engine import Engine
from helios_core.errors import HeliosError
from helios_core.model import Model
from helios_http.errors import invalid
from helios_http.generation import check_constraint, generate, refuse_text_longer_than_a_slot
from helios_http.schemas import parse_chat, parse_json
from helios_http.state import ServerState


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    parsed = parse_chat(body)
    model, engine = state.ready_engine()
    prompt = await run_in_threadpool(_render_chat, model, engine, state.chat_template, parsed.messages)
    await check_constraint(model, parsed.sampling)
    return await generate(request, state, engine, parsed, [prompt], "chat")


def _render_chat(model: Model, engine: Engine, template: str | None, messages: list[dict[str, str]]) -> list[int]:
    try:
        text = chat.load(model, template).render(messages)
    except HeliosError as e:
        raise invalid(str(e), "messages") from None
    refuse_text_longer_than_a_slot(model, engine, text, "messages")
    return model.vocab.tokenize(text, add_special=True, parse_special=True)
