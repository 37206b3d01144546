"""`helios-engine serve`: the server's flags; helios_http.server builds and runs the server from them."""

from __future__ import annotations

import argparse
import json
import os

from helios_cli.cache_options import add_prompt_cache_options, check_prompt_cache_options
from helios_cli.media_options import add_media_options
from helios_cli.options import (
    HelpFormatter,
    add_model_options,
    add_speculation_options,
    number,
    positive_int,
    positive_seconds,
)
from helios_core import reasoning
from helios_http.model_names import parse_alias


def add_command(commands) -> None:
    """The `serve` sub-command and its flags, on argparse's sub-parsers `commands`."""
    serve = commands.add_parser("serve", help="run the OpenAI-compatible HTTP server", formatter_class=HelpFormatter)
    add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=number(int, 1, 65535), default=8000, help="port to listen on")
    serve.add_argument("--parallel", "-np", type=positive_int, default=4, help="sequences decoded together")
    add_speculation_options(serve)
    add_prompt_cache_options(serve)
    add_media_options(serve)
    _add_reasoning_options(serve)
    serve.add_argument(
        "--pooling",
        choices=("mean", "cls", "last"),
        default=None,
        help="how /v1/embeddings pools the states of an input's tokens (default: the model's own, else mean)",
    )
    serve.add_argument(
        "--embedding-batch",
        type=number(int, 1, 16384),
        default=512,
        metavar="TOKENS",
        help="tokens per /v1/embeddings decode, and so the longest input (llama-server's -ub with --embeddings); "
        "its context, about 2 MiB per token on a 262k vocabulary, is made at the first embeddings request",
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("HELIOS_API_KEY"),
        help="require this bearer token (default: $HELIOS_API_KEY, which keeps it out of `ps`)",
    )
    serve.add_argument(
        "--metrics-public",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="serve /metrics without the API key (default: it needs the key when one is set)",
    )
    serve.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting for a slot before 429")
    serve.add_argument(
        "--max-body-mb",
        type=number(float, 0, low_open=True),
        default=8.0,
        help="largest request body in MiB; larger ones get 413 (default 8)",
    )
    serve.add_argument(
        "--request-timeout",
        type=positive_seconds,
        default=30.0,
        help="seconds a client gets to send a request's headers, and again its body (default 30)",
    )
    serve.add_argument(
        "--max-connections",
        type=positive_int,
        default=512,
        help="open connections served at once; requests on more get 503 (default 512)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=number(float, 0),
        default=10.0,
        help="seconds running requests get to finish after SIGTERM (default 10)",
    )
    serve.add_argument(
        "--n-predict",
        "--predict",
        type=number(int, -1),
        default=-1,
        metavar="N",
        help="tokens a request may generate when it sets no limit of its own (max_tokens, max_output_tokens); "
        "-1 (or 0): until the context is full. Agents that send no limit (Codex) need it with a model that rambles "
        "(default -1)",
    )
    serve.add_argument(
        "--responses-store-max",
        type=number(int, 0),
        default=1000,
        metavar="COUNT",
        help="responses kept in memory for previous_response_id and GET /v1/responses/{id}, least recently used "
        "out first; 0 keeps none (default 1000)",
    )
    serve.add_argument(
        "--responses-store-mb",
        type=number(float, 0, low_open=True),
        default=256.0,
        help="MiB of JSON those stored responses may hold, beside their count (default 256)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let browser pages from this origin call the API, e.g. http://localhost:3000, or * for any (repeatable)",
    )
    serve.add_argument(
        "--sampler",
        action="append",
        default=[],
        metavar="NAME=MODULE:CALLABLE",
        help='serve a plug-in sampler factory, picked by a request\'s "sampler": NAME (repeatable)',
    )
    serve.add_argument(
        "--processor",
        action="append",
        default=[],
        metavar="NAME=MODULE:CALLABLE",
        help='serve a plug-in logits processor factory, picked by a request\'s "processors": [NAME] (repeatable)',
    )
    serve.add_argument(
        "--default-plugins",
        type=_json,
        metavar="JSON",
        help='what a request that names none gets: {"sampler": NAME, "sampler_args": {...}, "processors": [...]}, '
        "for clients that cannot send those fields; a request's own sampler or processors replace the default's "
        "(a plug-in sampler replaces the built-in chain: temperature, top_p, ... are its business)",
    )
    serve.add_argument(
        "--model-alias",
        action="append",
        default=[],
        type=_model_alias,
        metavar="NAME=SERVED",
        help="answer model NAME (* globs allowed, e.g. claude-*) with SERVED, the model's id or ID:ADAPTER, on "
        "every route; on /v1/messages any other name falls back to the model (repeatable; the first match wins)",
    )
    serve.add_argument("--verbose", "-v", action="store_true", help="log llama.cpp's own messages too")


def run(args: argparse.Namespace) -> None:
    # Imported here, not above: uvicorn and the app cost `generate` and `--help` their import time.
    from helios_http.server import serve

    check_prompt_cache_options(args)
    raise SystemExit(serve(args))


def _add_reasoning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reasoning-format",
        default="auto",
        choices=reasoning.NAMES,
        help="how chat answers' reasoning section is read into reasoning_content: auto (from the chat template and "
        "the vocabulary), none (all of it is content), or a format (think: <think> tags; harmony: gpt-oss; gemma4)",
    )
    parser.add_argument(
        "--reasoning-budget",
        type=number(int, -1),
        default=-1,
        metavar="N",
        help="chat requests' thinking budget unless they name one (reasoning_budget_tokens): after N tokens of "
        "reasoning the engine ends the section; -1: no limit (default), 0: no thinking",
    )


def _model_alias(text: str) -> tuple[str, str]:
    try:
        return parse_alias(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
