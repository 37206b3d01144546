"""What the API families share: checks before a request queues, submission, and chat's and completions' answer.

`submit` queues a request's jobs on the engine thread (bridge.py) and maps submission errors to
statuses; every family answers from its events. `generate` is chat's and completions' answer:
one JSON body, or the events handed to `stream` (streaming.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from helios_core.engine import Done, Engine, EngineShutdownError, PromptTooLongError, QueueFullError
from helios_core.errors import ConstraintError
from helios_core.model import Model
from helios_core.scoring import Scored
from helios_http import shapes, tools
from helios_http.bridge import Job, run_jobs
from helios_http.errors import CLIENT_CLOSED_REQUEST, APIError, engine_error, invalid, shutting_down
from helios_http.lora_api import request_set
from helios_http.responses import json_response
from helios_http.sampling_fields import SamplingFields
from helios_http.schemas import ChatRequest, CompletionRequest
from helios_http.state import RETRY_AFTER_SECONDS, ServerState
from helios_http.streaming import stream


async def check_constraint(model: Model, sampling: SamplingFields) -> None:
    """Compile a request's constraint against the vocabulary (1 ms to 1 s, kept for reuse) before it queues."""
    if sampling.constraint is None:
        return
    try:
        await run_in_threadpool(sampling.constraint.validate, model)
    except ConstraintError as error:
        raise invalid(f"{sampling.constraint_param}: {error}", sampling.constraint_param) from None


def refuse_text_longer_than_a_slot(model: Model, engine: Engine, text: str, param: str) -> None:
    """A 400 for a text that cannot fit a slot, known from its length alone: tokenizing megabytes costs seconds.

    No token spans more than max_token_bytes bytes, so B bytes are at least ceil(B / max_token_bytes) tokens.
    """
    n_bytes = len(text.encode())  # orjson has already refused lone surrogates
    at_least = -(-n_bytes // model.vocab.max_token_bytes)
    if at_least >= engine.n_ctx_per_seq:
        raise too_long(f"the prompt has at least {at_least} tokens ({n_bytes} bytes of text)", engine, param)


def too_long(what: str, engine: Engine, param: str) -> APIError:
    # The engine's own PromptTooLongError says the same for prompts that pass this early check.
    return invalid(
        f"{what}, but the context holds {engine.n_ctx_per_seq} per sequence (and generation needs at least one more)",
        param,
        code="context_length_exceeded",
    )


async def generate(
    request: Request,
    state: ServerState,
    engine: Engine,
    parsed: ChatRequest | CompletionRequest,
    prompts: list[list[int]],
    kind: str,
    echoes: list[str] | None = None,
) -> Response:
    """Run every prompt n times and answer in chat's or completions' shape; echoes[p] (completions' echo)
    starts the text of prompt p's choices."""
    events = await submit(request, state, engine, parsed, prompts, "messages" if kind == "chat" else "prompt")
    if events is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # the client left before anything was produced
    n = parsed.n
    echo_of = (lambda index: echoes[index // n]) if echoes else None
    if parsed.stream:
        return StreamingResponse(
            stream(state, parsed, events, kind, echo_of),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await _collect(state, parsed, events, len(prompts) * n, kind, echo_of)


async def submit(
    request: Request,
    state: ServerState,
    engine: Engine,
    parsed: ChatRequest | CompletionRequest,
    prompts: list[list[int]],
    prompt_param: str,
) -> AsyncIterator | None:
    """Queue every prompt parsed.n times; the (index, event) pairs of all generations, index p * n + i.

    What every API family shares. Refusals (unknown adapters, plug-in arguments, a prompt too long,
    a full queue, shutdown) raise APIError before anything is sent, naming prompt_param where the
    prompt is at fault. None when the client left before anything was produced. Closing the
    returned iterator cancels whatever is still generating.
    """
    model = state.model
    n = parsed.n
    if parsed.sampling.max_tokens is None and state.n_predict > 0:
        parsed.sampling.max_tokens = state.n_predict
    adapters = request_set(state, parsed.sampling)  # unknown ones: a 400 before anything queues
    # Plug-in factories run once per generation, here: arguments they refuse are a 400 before anything queues.
    plugins = [(None, [])] * (len(prompts) * n)
    if parsed.sampling.plugins is not None or state.plugins.defaults is not None:
        plugins = await run_in_threadpool(state.plugins.instantiate, parsed.sampling.plugins, model, len(plugins))
    jobs: list[Job] = []
    for p, prompt in enumerate(prompts):
        for i in range(n):
            index = p * n + i
            params = parsed.sampling.params(model.vocab.n_vocab, seed_offset=i, plugins=plugins[index], lora=adapters)
            jobs.append((index, prompt, params))
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
        raise invalid(str(e), prompt_param, code="context_length_exceeded") from None
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
        return None
    if isinstance(first[1], Done) and first[1].error is not None:
        # Ended before producing anything (e.g. refused while queued, at shutdown): a status, not a stream.
        await events.aclose()
        raise engine_error(first[1].error)
    return _prepend(first, events)


def reasons(parsed: ChatRequest | CompletionRequest, kind: str) -> bool:
    """Whether a request's answers are read for reasoning (chat, with a served model's reasoning format)."""
    return kind == "chat" and parsed.sampling.reasoning is not None


async def _prepend(first, rest) -> AsyncIterator:
    # Closing this generator closes `rest` at once, which cancels whatever is still generating.
    async with contextlib.aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _collect(state: ServerState, parsed, events, n_choices: int, kind: str, echo_of=None) -> Response:
    choices = {i: shapes.Choice(i, echo=echo_of(i) if echo_of else "") for i in range(n_choices)}
    tally = shapes.UsageTally(parsed.n, reasoning=reasons(parsed, kind))
    async with contextlib.aclosing(events):
        async for index, event in events:
            choice = choices[index]
            if isinstance(event, Scored):
                choice.prompt_scores = event
                continue
            if isinstance(event, Done):
                if event.error is not None:
                    raise engine_error(event.error)
                choice.finish_reason = event.finish_reason
                tally.add(index, event.usage, event.timings)
                continue
            choice.text.append(event.text)
            choice.reasoning.append(event.reasoning)
            choice.steps.append(event)
    ordered = [choices[i] for i in range(n_choices)]
    vocab, logprobs = state.model.vocab, parsed.sampling.logprobs
    if kind == "chat" and parsed.tool_plan is not None:
        for choice in ordered:
            tools.settle(choice, parsed.tool_plan)  # the text becomes content and tool_calls
    if kind == "chat":
        body = shapes.chat_response(
            shapes.new_id("chatcmpl"), state.model_id, ordered, tally.body(), vocab, logprobs, tally.timings_body()
        )
    else:
        body = shapes.completion_response(
            shapes.new_id("cmpl"), state.model_id, ordered, tally.body(), vocab, logprobs, tally.timings_body()
        )
    return json_response(body)
