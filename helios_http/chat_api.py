"""OpenAI's chat completions: POST /v1/chat/completions.

The messages are rendered with the chat template and tokenized in the thread pool, where the
request's tools also become the constraint on its output (tools.py); generation and the answer
are shared with completions (generation.py).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from helios_core import chat, reasoning
from helios_core.engine import Engine
from helios_core.errors import HeliosError
from helios_core.model import Model
from helios_http import media, reasoning_fields, tools
from helios_http.errors import invalid
from helios_http.generation import check_constraint, generate, refuse_text_longer_than_a_slot
from helios_http.schemas import ChatRequest, parse_chat, parse_json
from helios_http.state import ServerState


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    parsed = parse_chat(body)
    engine, prompt = await chat_prompt(state, parsed)
    return await generate(request, state, engine, parsed, [prompt], "chat")


async def chat_prompt(state: ServerState, parsed: ChatRequest) -> tuple[Engine, list[int]]:
    """The engine, and the prompt's tokens with the request's tool plan and constraint checked.

    Shared by every family that speaks in messages: each translates its body into a ChatRequest first.
    """
    model, engine = state.ready_engine()
    loaded = await run_in_threadpool(media.load, parsed.media, state.media) if parsed.media else None
    prompt = await run_in_threadpool(
        render_chat, model, engine, state.chat_template, parsed, state.reasoning, state.reasoning_budget, loaded
    )
    await check_constraint(model, parsed.sampling)
    return engine, prompt


def render_chat(
    model: Model,
    engine: Engine,
    template: str | None,
    parsed: ChatRequest,
    reasoning_format: reasoning.ReasoningFormat | None = None,
    reasoning_budget: int = -1,
    loaded_media: media.LoadedMedia | None = None,
) -> list[int]:
    """The prompt's tokens; sets the request's tool plan (and so its constraint) and reasoning plan for its template.

    reasoning_format: how the served model writes its reasoning (None: it does not); reasoning_budget:
    the server's default thinking budget. loaded_media: parsed.media's bytes (media.load).
    """
    loaded, text = render_text(model, template, parsed, reasoning_budget)
    parsed.sampling.reasoning = reasoning.plan_for(reasoning_format, text)
    parsed.tool_plan = tools.plan(parsed.tools, loaded, model.vocab, parsed.sampling)
    refuse_text_longer_than_a_slot(model, engine, text, "messages")
    if parsed.media:
        return media.prompt(engine, text, parsed.media, loaded_media)
    return model.vocab.tokenize(text, add_special=True, parse_special=True)


def render_text(
    model: Model, template: str | None, parsed: ChatRequest, reasoning_budget: int = -1
) -> tuple[chat.ChatTemplate, str]:
    """The chat template, and the prompt text it renders for the request's messages, tools and template variables."""
    offered = parsed.tools.definitions if parsed.tools else None
    try:
        loaded = chat.load(model, template)
        variables = reasoning_fields.template_variables(parsed, loaded.source, reasoning_budget)
        text = loaded.render(
            parsed.messages, offered, continue_final_message=parsed.continue_final_message, variables=variables
        )
        return loaded, text
    except HeliosError as e:
        raise invalid(str(e), "messages") from None
