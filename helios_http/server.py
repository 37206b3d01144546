"""`helios-engine serve`: load the model in the background and serve the app with uvicorn.

/health answers 503 while the model loads, then 200. The model path is
resolved before the server starts, so a wrong --model fails at once with a
clear message instead of a server that never becomes healthy.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading

import uvicorn

from helios_core import chat
from helios_core.context import Context
from helios_core.engine import Engine
from helios_core.model import Model, check_gguf_file
from helios_core.resolve import resolve_model
from helios_http.app import ROUTES, ServerState, build_app

logger = logging.getLogger("helios.http")


def load_engine(state: ServerState, path, args: argparse.Namespace) -> None:
    """Load model, context and engine into `state` (runs on a background thread)."""
    try:
        model = Model(path, n_gpu_layers=args.n_gpu_layers)
        # A template llama.cpp cannot apply should stop the server now, not fail every chat request.
        chat.apply_template(chat.template_for(model, args.chat_template), [{"role": "user", "content": "hi"}])
        # One KV cache for all slots, each slot allowed --ctx-size tokens: no slot can starve another.
        ctx = Context(model, n_ctx=args.ctx_size * args.parallel, n_seq_max=args.parallel, n_batch=512,
                      n_threads=args.threads)
        state.model = model
        state.engine = Engine(ctx, n_ctx_per_seq=args.ctx_size, max_queue=args.max_queue)
        endpoints = ", ".join(sorted(route.path for route in ROUTES))
        logger.info("helios-engine: serving %s (%s) with %d slots of %d tokens at http://%s:%d; endpoints: %s",
                    state.model_id, model.description, args.parallel, args.ctx_size, args.host, args.port, endpoints)
    except Exception as error:  # reported by /health and the log; the server stays up to say so
        state.load_error = str(error)
        logger.error("helios-engine: the model failed to load: %s", error)


def serve(args: argparse.Namespace) -> None:
    path = resolve_model(args.model)
    check_gguf_file(path)
    state = ServerState(model_id=path.stem, api_key=args.api_key, chat_template=args.chat_template)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loader = threading.Thread(target=load_engine, args=(state, path, args), name="helios-load", daemon=True)
        loader.start()
        yield
        loader.join()
        if state.engine is not None:
            state.engine.close()
            state.engine.scheduler.ctx.close()
        if state.model is not None:
            state.model.close()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # llama.cpp narrates every load at INFO; its warnings and errors are what an operator needs.
    logging.getLogger("helios.llama").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    logger.info("helios-engine: loading %s", path)
    uvicorn.run(build_app(state, lifespan=lifespan), host=args.host, port=args.port, log_level="info",
                timeout_graceful_shutdown=5)
