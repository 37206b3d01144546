"""The Starlette app: OpenAI's chat, completions and embeddings endpoints, Anthropic's Messages, and the server's own.

Built by `build_app(state)` from plain values, so tests and `serve` build
the same app. Handlers never touch llama.cpp: tokenizing and templating run
in the thread pool, generation on the engine thread (bridge.py), embeddings on a thread
of their own (helios_core.embedding_worker.EmbeddingWorker).

The handlers live by API family: chat_api.py, completions_api.py (what they share:
generation.py, streaming.py), messages/ (Anthropic's), embeddings_api.py, tokenizer_api.py and admin_api.py; one
middleware per file.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from helios_http.accounting import RequestAccounting
from helios_http.admin_api import health, index, metrics, model, models
from helios_http.admission import Admission
from helios_http.auth import ApiKeyAuth
from helios_http.chat_api import chat_completions
from helios_http.completions_api import completions
from helios_http.embeddings_api import embeddings
from helios_http.errors import (
    APIError,
    api_error_handler,
    client_disconnected_handler,
    http_exception_handler,
    unexpected_error_handler,
)
from helios_http.limits import BodyLimits
from helios_http.lora_api import lora_adapters, set_lora_adapters
from helios_http.messages.api import count_tokens, messages
from helios_http.messages.errors import AnthropicErrors
from helios_http.responses_api import (
    count_input_tokens,
    create_response,
    delete_response,
    list_input_items,
    retrieve_response,
)
from helios_http.slots_api import slot_action, slots
from helios_http.state import ServerState
from helios_http.template_api import apply_template, props
from helios_http.tokenizer_api import detokenize, tokenize, tokenizer_info

ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/input_tokens", count_input_tokens, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", model, methods=["GET"]),  # ids may hold "/" (owner/repo:file)
    Route("/", index, methods=["GET"]),  # and HEAD, as every GET route
    Route("/health", health, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
    Route("/tokenizer_info", tokenizer_info, methods=["GET"]),
    Route("/apply-template", apply_template, methods=["POST"]),
    Route("/props", props, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/lora-adapters", lora_adapters, methods=["GET"]),
    Route("/lora-adapters", set_lora_adapters, methods=["POST"]),
    Route("/slots", slots, methods=["GET"]),
    Route("/slots/{id_slot}", slot_action, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
_KNOWN_PATHS = {route.path for route in ROUTES}


OPEN_PATHS = {"/", "/health"}  # answered without the API key: probes carry no credentials


def build_app(state: ServerState, lifespan=None) -> Starlette:
    """The app over `state`. Middleware, outermost first: count every response, give the Messages paths
    Anthropic's error shape, answer browsers' CORS
    preflights (--cors-origin), refuse what the server will not take now (draining, over the connection
    cap), check the key, bound the body."""
    middleware = [
        Middleware(RequestAccounting, metrics=state.metrics, known_paths=_KNOWN_PATHS),
        # Every error on /v1/messages* in Anthropic's shape, those of the middleware below included.
        Middleware(AnthropicErrors),
    ]
    if state.cors_origins:
        # Before the key check: a browser's preflight (OPTIONS) never carries the Authorization header.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=state.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["*"],
                expose_headers=["Retry-After"],
                max_age=600,
            )
        )
    middleware.append(Middleware(Admission, draining=lambda: state.draining))
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
