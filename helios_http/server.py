"""`helios-engine serve`: the app, uvicorn with our connection limits, and the model loaded in the background.

/health answers 503 while the model loads, then 200. A model that fails to
load stops the server: it exits 1 with one line saying why, instead of
staying up unable to answer. The model path is resolved before the server
starts, so a wrong --model fails at once.

Exit codes: 0 after a graceful shutdown (SIGTERM, see lifecycle.py; 130
after Ctrl+C), 1 when the model fails to load, 2 for bad options (helios_cli),
3 when the address cannot be bound (uvicorn's start-up failure).
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading

import uvicorn

from helios_cli.options import (
    add_rpc_workers,
    apply_control_vectors,
    chat_template_option,
    check_lora_options,
    check_speculation_options,
    load_lora_adapters,
    no_chat_template_warning,
    path_and_scale,
    speculation,
)
from helios_core import backend, chat, constraint, lora, reasoning, sampling
from helios_core.context import Context
from helios_core.embedding_worker import EmbeddingWorker
from helios_core.engine import Engine
from helios_core.errors import BackendError, HeliosError
from helios_core.model import Model, check_gguf_file
from helios_core.projector import Projector
from helios_core.prompt_cache import PromptCache
from helios_core.resolve import resolve_model
from helios_http.app import ROUTES, build_app
from helios_http.bridge import end_in_flight
from helios_http.connections import GuardedH11Protocol
from helios_http.lifecycle import HeliosServer
from helios_http.limits import MiB
from helios_http.media import serving_from
from helios_http.model_names import ModelNames
from helios_http.plugins import Plugins
from helios_http.responses_store import ResponseStore
from helios_http.slot_setup import prepare_slot_files
from helios_http.state import ServerState, load_failure

logger = logging.getLogger("helios.http")

# After the drain, the seconds uvicorn still waits for responses to be written
# (a client reading slowly) before it cancels their handlers.
WRITE_BACKSTOP_SECONDS = 3
# How long requests in flight get to receive their error when a backend fails, before the process exits.
END_IN_FLIGHT_SECONDS = 3


def load_engine(state: ServerState, path, args: argparse.Namespace) -> None:
    """Load model, context and engine into `state`, owned by state.runtime (runs on a background thread).

    Raises on failure, having closed what it opened."""
    runtime = state.runtime
    model = runtime.own(Model(path, n_gpu_layers=args.n_gpu_layers, tensor_split=args.tensor_split))
    # llguidance's view of the vocabulary and DRY's default sequence breakers (1.3 s of CPU for
    # Gemma's, 1.1 s of it llguidance's own build, which holds the GIL) are built beside the
    # context, and /health answers 200 only once they are: a server that reports ready must not
    # then run a second of Python beside its first requests (benchmarks saw it at half speed).
    warm = threading.Thread(target=_warm_vocabulary_caches, args=(model,), name="helios-warm", daemon=True)
    warm.start()
    try:
        # A template that cannot be applied should stop the server now, not fail every chat request.
        loaded = chat.load(model, state.chat_template)
        loaded.render([{"role": "user", "content": "hi"}])
        state.reasoning = reasoning.resolve(state.reasoning_format, loaded.source, model.vocab)
        logger.info("helios-engine: reasoning format %s", state.reasoning.name if state.reasoning else "none")
        if state.chat_template is None and model.chat_template() is None:
            logger.warning(no_chat_template_warning(model))
        # One KV stream per slot (Context's default), each of --ctx-size tokens: no slot can starve
        # another, and none loses the KV of its prefix to another's (see Context's kv_unified).
        ctx = runtime.own(
            Context(
                model,
                n_ctx=args.ctx_size * args.parallel,
                n_seq_max=args.parallel,
                n_batch=512,
                n_threads=args.threads,
            )
        )
        apply_control_vectors(args, model, ctx)
        adapters = load_lora_adapters(args, model)
        mmproj = state.media.mmproj
        if mmproj is not None:  # closed with the model (Model.adopt)
            gpu = args.n_gpu_layers != 0
            state.media.projector = Projector(model, mmproj, n_threads=args.threads, use_gpu=gpu)
            logger.info("helios-engine: %s reads %s", mmproj.name, ", ".join(state.media.modalities))
    except BaseException:
        runtime.close()
        raise
    state.model = model
    state.lora, state.lora_scales = [a for a, _ in adapters], [scale for _, scale in adapters]
    # Listed once, here, before the engine thread uses them: an RPC worker's connection is not
    # shared safely between threads, so /health and /metrics show this snapshot, not live values.
    state.devices = backend.devices()
    verdict = backend.cpu_verdict()
    if verdict is not None:
        state.cpu_build = verdict.to_json()
        # A variant that faulted here is news an operator should see; the usual case is not.
        (logger.warning if verdict.skipped else logger.info)("helios-engine: %s", verdict.summary())
    if not args.rpc:
        # A context of its own on the engine's model, made at the first embeddings request. Not with
        # --rpc: it would decode beside the engine thread, and an RPC connection is not shared safely.
        state.embeddings = runtime.own(
            EmbeddingWorker(model, pooling=args.pooling, n_batch=args.embedding_batch, n_threads=args.threads)
        )
        logger.info(
            "helios-engine: /v1/embeddings pools by %s, at most %d tokens an input",
            state.embeddings.pooling,
            args.embedding_batch,
        )
    warm.join()  # before state.engine: /health says 200 from then on
    state.plugins.check_default_arguments(model)  # ones a factory refuses: a failed start, not 400s later
    cache = PromptCache(int(args.cache_ram * MiB)) if args.cache_ram > 0 else None
    prepare_slot_files(state, args, path, cache)
    state.engine = runtime.own(
        Engine(
            ctx,
            n_ctx_per_seq=args.ctx_size,
            max_queue=args.max_queue,
            speculation=speculation(args, runtime, model, args.parallel, args.ctx_size),
            prompt_cache=cache,
        )
    )
    endpoints = ", ".join(sorted(route.path for route in ROUTES))
    logger.info(
        "helios-engine: serving %s (%s) with %d slots of %d tokens at http://%s:%d; endpoints: %s",
        state.model_id,
        model.description,
        args.parallel,
        args.ctx_size,
        args.host,
        args.port,
        endpoints,
    )


def check_model_aliases(args: argparse.Namespace, model_path) -> None:
    """Refuse a --model-alias whose SERVED is not a name the server answers to: the model's id, or ID:ADAPTER."""
    served = [model_path.stem] + [f"{model_path.stem}:{lora.adapter_name(path_and_scale(s)[0])}" for s in args.lora]
    for pattern, target in args.model_alias:
        if target not in served:
            raise ValueError(
                f"--model-alias {pattern}={target}: {target!r} is not served here; the names are "
                f"{', '.join(map(repr, served))}"
            )


def _warm_vocabulary_caches(model: Model) -> None:
    try:
        model.vocab.max_token_bytes  # noqa: B018 (read from every token's piece, as the two below)
        constraint.tokenizer_for(model)
        sampling.dry_sequence_breakers(model.vocab)
    except HeliosError:  # the model closed first (shutdown): nothing to warm
        pass


def _end_in_flight(state: ServerState, reason: str) -> None:
    """The backend failed for good (on the engine thread, which never returns): answer everyone, then exit."""
    state.draining = True  # new requests and /health: 503, so a balancer moves on
    end_in_flight(BackendError(reason), timeout=END_IN_FLIGHT_SECONDS)


def serve(args: argparse.Namespace) -> int:
    """Run the server until it is told to stop; the process's exit code."""
    path = resolve_model(args.model)
    check_gguf_file(path)
    check_lora_options(args, path)  # a bad --lora: one line, exit 2, before anything loads
    check_model_aliases(args, path)  # likewise an alias to a name not served
    check_speculation_options(args, path)  # likewise a --spec without its --draft-model, or a mismatched one
    # A plug-in that does not import stops the server now, with one line, not on the first request.
    plugins = Plugins.load(args.sampler, args.processor)
    if args.default_plugins is not None:
        plugins.set_defaults(args.default_plugins)  # likewise a default naming no plug-in
    state = ServerState(
        plugins=plugins,
        cors_origins=args.cors_origin,
        model_id=path.stem,
        api_key=args.api_key,
        metrics_public=args.metrics_public,
        chat_template=chat_template_option(args),  # a template file that does not parse: exit 2, before loading
        reasoning_format=args.reasoning_format,
        reasoning_budget=args.reasoning_budget,
        max_body_bytes=int(args.max_body_mb * MiB),
        request_timeout=args.request_timeout,
        responses=ResponseStore(args.responses_store_max, int(args.responses_store_mb * MiB)),
        n_predict=args.n_predict,
        model_names=ModelNames(args.model_alias),
        media=serving_from(args),  # a missing --mmproj or --media-path: one line, exit 2, before anything loads
    )
    # Workers are registered (an unreachable one: one line, exit 2) before anything listens. A worker
    # lost later ends the requests in flight with a 503 or an error event, then the process (status 1).
    add_rpc_workers(args, before_exit=lambda reason: _end_in_flight(state, reason))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # llama.cpp narrates every load at INFO; its warnings and errors are what an operator needs.
    logging.getLogger("helios.llama").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    logger.info("helios-engine: loading %s", path)
    config = uvicorn.Config(
        build_app(state),
        host=args.host,
        port=args.port,
        log_level="info",
        ws="none",
        http=functools.partial(
            GuardedH11Protocol, header_timeout=args.request_timeout, max_connections=args.max_connections
        ),
        timeout_graceful_shutdown=WRITE_BACKSTOP_SECONDS,
    )
    server = HeliosServer(config, state=state, load=lambda: load_engine(state, path, args), grace=args.shutdown_grace)
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal it shut down for once it is done, for embedders. The
        # drain is over by then: ignore it, so a SIGTERM ends in exit code 0, not death by signal.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if state.load_error is not None:
        print(f"helios-engine: {load_failure(state.load_error)}", file=sys.stderr)
        return 1
    return 0
