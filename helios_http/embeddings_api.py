"""OpenAI's embeddings: POST /v1/embeddings.

`input` is a string, a list of strings, a list of token ids, or a list of token-id lists (at most
MAX_INPUTS). Texts get the model's BOS, as llama-server gives them; token lists are taken as given.
Each vector is pooled as the server was started (--pooling) and L2-normalised; `encoding_format`
"base64" sends each as the base64 of its little-endian float32 bytes, as OpenAI's SDK decodes it.
`dimensions`, if given, must be the model's own width: vectors are not truncated.

The vectors are computed by an EmbeddingWorker (helios_core.embeddings): a llama context of its
own on the same model, on a thread of its own, so embedding never waits for generation nor
generation for embedding. Inputs of concurrent requests share its decodes.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from helios_core.embedding_worker import EmbeddingJob, EmbeddingWorker
from helios_core.embeddings import InputTooLongError
from helios_core.errors import HeliosError
from helios_http.bridge import run_job
from helios_http.errors import APIError, invalid, shutting_down
from helios_http.schemas import parse_json
from helios_http.state import ServerState

MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request
ENCODINGS = ("float", "base64")
INLINE_TEXT_CHARS = 512  # texts up to this many characters in all are tokenized on the event loop (~0.3 ms)


async def embeddings(request: Request) -> Response:
    state: ServerState = request.app.state.helios
    body = parse_json(await request.body())
    inputs = _inputs(body.get("input"))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise invalid(f"encoding_format must be one of {', '.join(ENCODINGS)}; got {encoding!r}", "encoding_format")
    state.ready_engine()
    worker = state.embeddings
    if worker is None:
        # The server leaves them off with --rpc (server.py): an RPC connection is not shared between threads.
        raise APIError(501, "this server does not serve embeddings (they are off with --rpc)", type="server_error")
    _check_dimensions(body.get("dimensions"), worker.n_embd)
    # Tokenizing a few short texts costs less than the hop to a pool thread and back.
    small = sum(len(item) for item in inputs if isinstance(item, str)) <= INLINE_TEXT_CHARS
    token_lists = _tokens(worker, inputs) if small else await run_in_threadpool(_tokens, worker, inputs)
    job = await _run(request, worker, token_lists)
    n_tokens = job.n_tokens
    state.metrics.embedded(len(token_lists), n_tokens)
    encode = _base64 if encoding == "base64" else _floats
    data = [{"object": "embedding", "index": i, "embedding": encode(row)} for i, row in enumerate(job.vectors)]
    answer = {
        "object": "list",
        "data": data,
        "model": state.model_id,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


# --- helpers -------------------------------------------------------------------------


def _inputs(value: Any) -> list[str | list[int]]:
    """The inputs of `input`, each a text or a token-id list, in OpenAI's four shapes."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise invalid(
            "input must be a string, a list of strings, a list of token ids or a list of such lists, and not empty",
            "input",
        )
    if all(_is_token(v) for v in value):
        return [value]  # one token-id list
    if len(value) > MAX_INPUTS:
        raise invalid(f"input holds {len(value)} inputs; one request takes at most {MAX_INPUTS}", "input")
    for i, item in enumerate(value):
        if isinstance(item, str):
            continue
        if not isinstance(item, list) or not all(_is_token(v) for v in item):
            raise invalid(f"input[{i}] must be a string or a list of token ids (integers); got {_kind(item)}", "input")
    return value


def _kind(value: Any) -> str:
    """A JSON value's kind, as a client wrote it."""
    if isinstance(value, list):
        return "a list holding something other than integers"
    names = {bool: "true/false", int: "a number", float: "a number", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_dimensions(value: Any, n_embd: int) -> None:
    if value is None:
        return
    if not _is_token(value):
        raise invalid("dimensions must be an integer", "dimensions")
    if value != n_embd:
        raise invalid(
            f"dimensions must be {n_embd}, this model's embedding width: vectors are not truncated here (got {value})",
            "dimensions",
        )


def _tokens(worker: EmbeddingWorker, inputs: list[str | list[int]]) -> list[np.ndarray]:
    tokens = []
    for i, item in enumerate(inputs):
        try:
            tokens.append(worker.tokens(item, i))
        except InputTooLongError as error:
            raise invalid(
                f"{error} (the server's --embedding-batch)", "input", code="context_length_exceeded"
            ) from None
        except ValueError as error:
            raise invalid(str(error), "input") from None
    return tokens


async def _run(request: Request, worker: EmbeddingWorker, token_lists: list[np.ndarray]) -> EmbeddingJob:
    """The job once done; a client that goes away meanwhile cancels what of it is not decoded yet."""
    try:
        job = await run_job(lambda on_done: worker.submit(token_lists, on_done), request.is_disconnected)
    except HeliosError:  # closed: the server is stopping
        raise shutting_down() from None
    if job is None:
        raise ClientDisconnect()
    if job.error is not None:
        if worker.closed:
            raise shutting_down()
        raise APIError(500, f"embedding failed: {job.error}", type="server_error")
    return job


def _floats(row: np.ndarray) -> np.ndarray:
    return row  # orjson writes float32 arrays itself, each number in its shortest form


def _base64(row: np.ndarray) -> str:
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
