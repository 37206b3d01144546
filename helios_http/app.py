"""The Starlette app: OpenAI's chat and completions endpoints, and the server's own.

Built by `build_app(state)` from plain values, so tests and `serve` build
the same app. Handlers never touch llama.cpp: tokenizing and templating run
in the thread pool, generation on the engine thread (bridge.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from helios_core import chat
from helios_core.engine import Done, Engine, EngineShutdownError, PromptTooLongError, QueueFullError
from helios_core.errors import ConstraintError, HeliosError
from helios_core.model import Model
from helios_core.scoring import Scored
from helios_http import shapes
from helios_http.admission import Admission
from helios_http.auth import ApiKeyAuth
from helios_http.bridge import Job, run_jobs
from helios_http.errors import (
    CLIENT_CLOSED_REQUEST,
    APIError,
    api_error_handler,
    client_disconnected_handler,
    http_exception_handler,
    invalid,
    shutting_down,
    unexpected_error_handler,
)
from helios_http.limits import BodyLimits, MiB
from helios_http.metrics import Metrics, RequestAccounting
from helios_http.schemas import (
    ChatRequest,
    CompletionRequest,
    SamplingFields,
    parse_chat,
    parse_completion,
    parse_json,
)
from helios_http.tokenizer_api import detokenize, tokenize, tokenizer_info

RETRY_AFTER_SECONDS = 1


@dataclass
class ServerState:
    """What the handlers share. `engine` is None until the model has loaded."""

    model_id: str
    api_key: str | None = None
    metrics_public: bool = False  # /metrics without the API key
    chat_template: str | None = None  # a name or template text; None: chosen from the model
    max_body_bytes: int = 8 * MiB
    request_timeout: float = 30.0  # seconds for a request's body to arrive (headers: connections.py)
    model: Model | None = None
    engine: Engine | None = None
    load_error: str | None = None
    draining: bool = False  # shutting down: new requests get 503
    metrics: Metrics = field(default_factory=Metrics)

    def ready_engine(self) -> tuple[Model, Engine]:
        if self.engine is None or self.model is None:
            raise _loading_error(self)
        return self.model, self.engine


def _loading_error(state: ServerState) -> APIError:
    if state.load_error:
        return APIError(
            503, f"the model failed to load: {state.load_error}", type="server_error", code="model_load_failed"
        )
    return APIError(
        503,
        "the model is loading; retry shortly",
        type="service_unavailable",
        code="model_loading",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# --- generation --------------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    parsed = parse_chat(body)
    model, engine = state.ready_engine()
    prompt = await run_in_threadpool(_render_chat, model, engine, state.chat_template, parsed.messages)
    await _check_constraint(model, parsed.sampling)
    return await _generate(request, state, engine, parsed, [prompt], "chat")


async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    parsed = parse_completion(body)
    model, engine = state.ready_engine()
    prompts = [await run_in_threadpool(_tokenize_prompt, model, engine, p) for p in parsed.prompts]
    await _check_constraint(model, parsed.sampling)
    echoes = None
    if parsed.echo:  # each choice's text starts with its prompt: as given, or the token list's text
        echoes = [p if isinstance(p, str) else await run_in_threadpool(model.vocab.detokenize, p)
                  for p in parsed.prompts]
    return await _generate(request, state, engine, parsed, prompts, "completion", echoes)


def _render_chat(model: Model, engine: Engine, template: str | None, messages: list[dict[str, str]]) -> list[int]:
    try:
        text = chat.load(model, template).render(messages)
    except HeliosError as e:
        raise invalid(str(e), "messages") from None
    _refuse_text_longer_than_a_slot(model, engine, text, "messages")
    return model.vocab.tokenize(text, add_special=True, parse_special=True)


async def _check_constraint(model: Model, sampling: SamplingFields) -> None:
    """Compile a request's constraint against the vocabulary (1 ms to 1 s, kept for reuse) before it queues."""
    if sampling.constraint is None:
        return
    try:
        await run_in_threadpool(sampling.constraint.validate, model)
    except ConstraintError as error:
        raise invalid(f"{sampling.constraint_param}: {error}", sampling.constraint_param) from None


def _tokenize_prompt(model: Model, engine: Engine, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        if not prompt:
            raise invalid("prompt is empty", "prompt")
        _refuse_text_longer_than_a_slot(model, engine, prompt, "prompt")
        return model.vocab.tokenize(prompt, add_special=True, parse_special=True)
    if len(prompt) >= engine.n_ctx_per_seq:
        raise _too_long(f"the prompt has {len(prompt)} tokens", engine, "prompt")
    n_vocab = model.vocab.n_vocab
    if any(not 0 <= t < n_vocab for t in prompt):
        raise invalid(f"prompt token ids must lie in [0, {n_vocab})", "prompt")
    return prompt


def _refuse_text_longer_than_a_slot(model: Model, engine: Engine, text: str, param: str) -> None:
    """A 400 for a text that cannot fit a slot, known from its length alone: tokenizing megabytes costs seconds.

    No token spans more than max_token_bytes bytes, so B bytes are at least ceil(B / max_token_bytes) tokens.
    """
    n_bytes = len(text.encode())  # orjson has already refused lone surrogates
    at_least = -(-n_bytes // model.vocab.max_token_bytes)
    if at_least >= engine.n_ctx_per_seq:
        raise _too_long(f"the prompt has at least {at_least} tokens ({n_bytes} bytes of text)", engine, param)


def _too_long(what: str, engine: Engine, param: str) -> APIError:
    # The engine's own PromptTooLongError says the same for prompts that pass this early check.
    return invalid(
        f"{what}, but the context holds {engine.n_ctx_per_seq} per sequence (and generation needs at least one more)",
        param,
        code="context_length_exceeded",
    )


async def _generate(
    request: Request,
    state: ServerState,
    engine: Engine,
    parsed: ChatRequest | CompletionRequest,
    prompts: list[list[int]],
    kind: str,
    echoes: list[str] | None = None,
) -> Response:
    """Run every prompt n times; echoes[p] (completions' echo) starts the text of prompt p's choices."""
    model = state.model
    n = parsed.n
    jobs: list[Job] = []
    for p, prompt in enumerate(prompts):
        for i in range(n):
            params = parsed.sampling.params(model.vocab.n_vocab, seed_offset=i)
            jobs.append((p * n + i, prompt, params))
    if len(jobs) > engine.max_queue:
        raise invalid(
            f"{len(prompts)} prompt(s) x n={n} asks for {len(jobs)} generations, more than this server "
            f"queues at once ({engine.max_queue})",
            "n",
        )
    # Streams are cancelled by Starlette once they start; until then (queued, reading
    # the prompt) and for whole responses, run_jobs watches for the client leaving.
    events = run_jobs(engine, jobs, request.is_disconnected)
    try:
        first = await anext(events)  # submission errors surface here, before any byte is sent
    except PromptTooLongError as e:
        raise invalid(str(e), "messages" if kind == "chat" else "prompt", code="context_length_exceeded") from None
    except QueueFullError as e:
        raise APIError(
            429,
            str(e),
            type="rate_limit_exceeded",
            code="queue_full",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    except EngineShutdownError as e:
        raise shutting_down(str(e)) from None
    except StopAsyncIteration:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # the client left before anything was produced
    if isinstance(first[1], Done) and first[1].error is not None:
        # Ended before producing anything (e.g. refused while queued, at shutdown): a status, not a stream.
        await events.aclose()
        raise _engine_error(first[1].error)
    echo_of = (lambda index: echoes[index // n]) if echoes else None
    if parsed.stream:
        return StreamingResponse(
            _stream(state, parsed, _prepend(first, events), kind, echo_of),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await _collect(state, parsed, _prepend(first, events), len(jobs), kind, echo_of)


async def _prepend(first, rest) -> AsyncIterator:
    # Closing this generator closes `rest` at once, which cancels whatever is still generating.
    async with contextlib.aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _collect(state: ServerState, parsed, events, n_choices: int, kind: str, echo_of=None) -> Response:
    choices = {i: shapes.Choice(i, echo=echo_of(i) if echo_of else "") for i in range(n_choices)}
    tally = shapes.UsageTally(parsed.n)
    async with contextlib.aclosing(events):
        async for index, event in events:
            choice = choices[index]
            if isinstance(event, Scored):
                choice.prompt_scores = event
                continue
            if isinstance(event, Done):
                if event.error is not None:
                    raise _engine_error(event.error)
                choice.finish_reason = event.finish_reason
                tally.add(index, event.usage)
                continue
            choice.text.append(event.text)
            choice.steps.append(event)
    ordered = [choices[i] for i in range(n_choices)]
    vocab, logprobs = state.model.vocab, parsed.sampling.logprobs
    if kind == "chat":
        body = shapes.chat_response(shapes.new_id("chatcmpl"), state.model_id, ordered, tally.body(), vocab, logprobs)
    else:
        body = shapes.completion_response(shapes.new_id("cmpl"), state.model_id, ordered, tally.body(), vocab, logprobs)
    return json_response(body)


def _engine_error(error: Exception) -> APIError:
    if isinstance(error, EngineShutdownError):
        return shutting_down(str(error))
    # Client mistakes are refused before submission; what fails later is ours.
    return APIError(500, f"generation failed: {error}", type="server_error")


def _sse(body: dict) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


_DONE = b"data: [DONE]\n\n"


async def _stream(state: ServerState, parsed: ChatRequest | CompletionRequest, events, kind: str, echo_of=None):
    """SSE for chat and completions: chunks per token, a finish chunk per choice, usage, [DONE].

    With echo, each choice's first chunk is its prompt (with the prompt's logprobs when asked for,
    so it comes once they are computed). An error in the middle ends the stream with an error
    event and [DONE].
    """
    chat = kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"
    id_, created, model_id = shapes.new_id("chatcmpl" if chat else "cmpl"), shapes.now(), state.model_id
    usage_field = {"usage": None} if parsed.include_usage else {}
    vocab, logprobs_wanted = state.model.vocab, parsed.sampling.logprobs
    tally = shapes.UsageTally(parsed.n)
    offsets: dict[int, int] = {}  # completions' text_offset per choice

    def chunk(choice: dict) -> bytes:
        return _sse(shapes.envelope(id_, obj, created, model_id, [choice], **usage_field))

    if chat:
        for index in range(parsed.n):
            yield chunk(shapes.chunk_choice(True, index, None))
    elif echo_of and not logprobs_wanted:
        for index in range(len(parsed.prompts) * parsed.n):
            offsets[index] = len(echo_of(index))
            yield chunk(shapes.chunk_choice(False, index, echo_of(index)))
    async with contextlib.aclosing(events):
        async for index, event in events:
            if isinstance(event, Scored):  # only asked for with echo and logprobs
                text = echo_of(index)
                offsets[index] = len(text)
                logprobs = shapes.completion_logprobs(vocab, [], prompt=event)
                yield chunk(shapes.chunk_choice(False, index, text, logprobs=logprobs))
                continue
            if isinstance(event, Done):
                if event.error is not None:
                    yield _sse(_engine_error(event.error).body())
                    yield _DONE
                    return
                tally.add(index, event.usage)
                yield chunk(shapes.chunk_choice(chat, index, "", event.finish_reason))
                continue
            logprobs = None
            if logprobs_wanted and chat:
                logprobs = shapes.chat_logprobs(vocab, [event])
            elif logprobs_wanted:
                logprobs = shapes.completion_logprobs(vocab, [event], offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + len(event.text)
            if event.text or logprobs:
                yield chunk(shapes.chunk_choice(chat, index, event.text, logprobs=logprobs))
    if parsed.include_usage:
        yield _sse(shapes.envelope(id_, obj, created, model_id, [], usage=tally.body()))
    yield _DONE


# --- the server's own endpoints ------------------------------------------------------


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
        return _loading_error(state).response()
    return json_response({"status": "ok"})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    return Response(state.metrics.render(state.engine), media_type="text/plain; version=0.0.4")


# --- app ---------------------------------------------------------------------------


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
    Route("/tokenizer_info", tokenizer_info, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
_KNOWN_PATHS = {route.path for route in ROUTES}


OPEN_PATHS = {"/health"}  # answered without the API key: probes carry no credentials


def build_app(state: ServerState, lifespan=None) -> Starlette:
    """The app over `state`. Middleware, outermost first: count every response, refuse what the server
    will not take now (draining, over the connection cap), check the key, bound the body."""
    middleware = [
        Middleware(RequestAccounting, metrics=state.metrics, known_paths=_KNOWN_PATHS),
        Middleware(Admission, draining=lambda: state.draining),
    ]
    if state.api_key:
        open_paths = (OPEN_PATHS | {"/metrics"}) if state.metrics_public else OPEN_PATHS
        middleware.append(Middleware(ApiKeyAuth, api_key=state.api_key, open_paths=open_paths))
    middleware.append(Middleware(BodyLimits, max_bytes=state.max_body_bytes, timeout=state.request_timeout))
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={
            APIError: api_error_handler,
            HTTPException: http_exception_handler,
            ClientDisconnect: client_disconnected_handler,
            Exception: unexpected_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.helios = state
    return app
