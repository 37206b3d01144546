"""OpenAI's (legacy) completions: POST /v1/completions.

Prompts come as text or token ids, one or several; with echo, each choice's text starts with its
prompt. Generation and the answer are shared with chat (generation.py).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from helios_core.engine import Engine
from helios_core.model import Model
from helios_http.errors import invalid
from helios_http.generation import check_constraint, generate, refuse_text_longer_than_a_slot, too_long
from helios_http.schemas import parse_completion, parse_json
from helios_http.state import ServerState


async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    parsed = parse_completion(body)
    model, engine = state.ready_engine()
    prompts = [await run_in_threadpool(_tokenize_prompt, model, engine, p) for p in parsed.prompts]
    await check_constraint(model, parsed.sampling)
    echoes = None
    if parsed.echo:  # each choice's text starts with its prompt: as given, or the token list's text
        echoes = [
            p if isinstance(p, str) else await run_in_threadpool(model.vocab.detokenize, p) for p in parsed.prompts
        ]
    return await generate(request, state, engine, parsed, prompts, "completion", echoes)


def _tokenize_prompt(model: Model, engine: Engine, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        if not prompt:
            raise invalid("prompt is empty", "prompt")
        refuse_text_longer_than_a_slot(model, engine, prompt, "prompt")
        return model.vocab.tokenize(prompt, add_special=True, parse_special=True)
    if len(prompt) >= engine.n_ctx_per_seq:
        raise too_long(f"the prompt has {len(prompt)} tokens", engine, "prompt")
    n_vocab = model.vocab.n_vocab
    if any(not 0 <= t < n_vocab for t in prompt):
        raise invalid(f"prompt token ids must lie in [0, {n_vocab})", "prompt")
    return prompt
