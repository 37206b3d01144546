"""The remote-tokenizer endpoints: /tokenize, /detokenize and /tokenizer_info.

Two client families use these paths, with different bodies:

- llama-server's: POST /tokenize {"content", "add_special", "with_pieces"} -> {"tokens"};
  POST /detokenize {"tokens"} -> {"content"}.
- vLLM's, which lm-evaluation-harness's remote tokenizer (`tokenizer_backend=remote`) speaks:
  POST /tokenize {"prompt", "add_special_tokens", "return_token_strs"}
  -> {"count", "max_model_len", "tokens", "token_strs"}; POST /detokenize {"tokens"} -> {"prompt"};
  GET /tokenizer_info -> the fields of a tokenizer_config.json.

A /tokenize body names its family by its text field. A /detokenize body cannot (both send only
"tokens"), so its answer carries both "content" and "prompt".

Text is tokenized with special-token parsing: lm-eval finds the EOS and BOS ids by tokenizing the
eos_token and bos_token texts of /tokenizer_info, and llama-server clients expect the same.
Long texts are tokenized whole, never refused for the context's length: evaluation clients
tokenize whole documents and cut them into windows themselves.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from helios_core import chat
from helios_core.model import Model
from helios_http.errors import invalid
from helios_http.fields import boolean_field
from helios_http.responses import json_response
from helios_http.schemas import parse_json
from helios_http.state import ServerState


async def tokenize(request: Request) -> Response:
    """Token ids of a text, in llama-server's form (`content`) or vLLM's (`prompt`)."""
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    if "prompt" in body and "content" in body:
        raise invalid("give the text as content (llama-server's form) or prompt (vLLM's), not both", "prompt")
    if "prompt" in body:
        return await _tokenize_prompt(state, body)
    if "content" in body:
        return await _tokenize_content(state, body)
    if "messages" in body:
        raise invalid("chat messages are not tokenized here; send the rendered text as prompt", "messages")
    raise invalid(
        "the text to tokenize is missing: send it as content (llama-server's form) or prompt (vLLM's)", "content"
    )


async def detokenize(request: Request) -> Response:
    """Text of token ids (special tokens written out), under both clients' keys: `content` and `prompt`."""
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise invalid("tokens must be a list of token ids", "tokens")
    model, _ = state.ready_engine()
    n_vocab = model.vocab.n_vocab
    if any(not 0 <= t < n_vocab for t in tokens):
        raise invalid(f"token ids must lie in [0, {n_vocab})", "tokens")
    text = await run_in_threadpool(model.vocab.detokenize, tokens, unparse_special=True)
    return json_response({"content": text, "prompt": text})


async def tokenizer_info(request: Request) -> Response:
    """What a tokenizer_config.json would say, for clients that tokenize through this server.

    bos_token, eos_token, pad_token: the token's text, null when the model has none.
    model_max_length: tokens one sequence may hold here (prompt and generation together).
    chat_template: the Jinja template the server renders chat with, left out when there is none
    (a built-in llama.cpp template has no Jinja text to give).
    """
    state: ServerState = request.app.state.helios
    model, engine = state.ready_engine()
    vocab = model.vocab
    info: dict[str, Any] = {
        "tokenizer_class": model.meta("tokenizer.ggml.model") or "",  # the GGUF's tokenizer kind, e.g. "llama"
        "bos_token": _token_text(model, vocab.bos),
        "eos_token": _token_text(model, vocab.eos),
        "pad_token": _token_text(model, _meta_int(model, "tokenizer.ggml.padding_token_id")),
        "add_bos_token": vocab.add_bos,
        "model_max_length": engine.n_ctx_per_seq,
    }
    template = _jinja_template(state, model)
    if template is not None:
        info["chat_template"] = template
    return json_response(info)


# --- helpers -------------------------------------------------------------------------


async def _tokenize_content(state: ServerState, body: dict[str, Any]) -> Response:
    content = body["content"]
    if not isinstance(content, str):
        raise invalid("content must be a string", "content")
    add_special = boolean_field(body, "add_special", False)
    with_pieces = boolean_field(body, "with_pieces", False)
    model, _ = state.ready_engine()
    tokens = await run_in_threadpool(model.vocab.tokenize, content, add_special=add_special, parse_special=True)
    if with_pieces:
        pieces = [
            {"id": t, "piece": model.vocab.token_to_piece(t, special=True).decode("utf-8", errors="replace")}
            for t in tokens
        ]
        return json_response({"tokens": pieces})
    return json_response({"tokens": tokens})


async def _tokenize_prompt(state: ServerState, body: dict[str, Any]) -> Response:
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        raise invalid("prompt must be a string", "prompt")
    add_special = boolean_field(body, "add_special_tokens", True)  # vLLM's default: BOS added where the model wants it
    with_strs = boolean_field(body, "return_token_strs", False)
    model, engine = state.ready_engine()
    tokens = await run_in_threadpool(model.vocab.tokenize, prompt, add_special=add_special, parse_special=True)
    # token_strs are vocabulary entries (e.g. "▁Hello"), as vLLM's convert_ids_to_tokens gives them.
    strs = [model.vocab.token_text(t) for t in tokens] if with_strs else None
    return json_response(
        {"count": len(tokens), "max_model_len": engine.n_ctx_per_seq, "tokens": tokens, "token_strs": strs}
    )


def _token_text(model: Model, token: int | None) -> str | None:
    if token is None or not 0 <= token < model.vocab.n_vocab:  # llama.cpp says -1 for "no such token"
        return None
    return model.vocab.token_text(token)


def _meta_int(model: Model, key: str) -> int | None:
    value = model.meta(key)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _jinja_template(state: ServerState, model: Model) -> str | None:
    """The Jinja text chat is rendered with (the server's template, else the GGUF's own); None for a built-in."""
    return chat.load(model, state.chat_template).source
