"""`helios-engine`: the command line.

helios-engine generate   [--model SPEC] --prompt TEXT [--chat] [sampling options]
helios-engine serve      [--model SPEC] [--host H] [--port P] ...
helios-engine rpc-worker [--host H] [--port P] [--threads N] [--cache [DIR]]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys

from helios_core import reasoning
from helios_core.errors import HeliosError
from helios_core.sampling import DEFAULT_TEMPERATURE
from helios_http.model_names import parse_alias


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line on stderr (exit 2), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind, low, high=None, *, low_open: bool = False):
    """An argparse type: `kind` (int or float) within [low, high], or (low, high] with low_open."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            bound = f"above {low}" if low_open else f"at least {low}"
            bound += f" and at most {high}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"must be {bound}; got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _shares(text: str) -> list[float]:
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if any(not share >= 0 for share in shares) or not sum(shares) > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: shares must be >= 0 and not all 0")
    return shares


def _layer_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep or not first.isdigit() or not last.isdigit() or not 1 <= int(first) <= int(last):
        raise argparse.ArgumentTypeError(f"{text!r} is not a layer range A-B with 1 <= A <= B")
    return int(first), int(last)


def _model_alias(text: str) -> tuple[str, str]:
    try:
        return parse_alias(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_positive_int = _number(int, 1)
_positive_seconds = _number(float, 0, low_open=True)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="a .gguf path, owner/repo:file.gguf from the Hugging Face cache, or nothing for the embedded Gemma 3 270M",
    )
    parser.add_argument(
        "--ctx-size", "-c", type=_positive_int, default=4096, help="context size in tokens (default 4096)"
    )
    parser.add_argument("--threads", "-t", type=_positive_int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--n-gpu-layers", "-ngl", type=int, default=0,
        help="layers to offload to the GPU in a CUDA build, or to --rpc workers (-1 = all)",
    )
    parser.add_argument(
        "--rpc",
        default=None,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="offload layers (with --n-gpu-layers) to these `helios-engine rpc-worker`s or llama.cpp rpc-servers",
    )
    parser.add_argument(
        "--tensor-split",
        "-ts",
        type=_shares,
        default=None,
        metavar="A,B,...",
        help="the share of offloaded layers each device takes, e.g. 3,1 (default: by free memory)",
    )
    parser.add_argument(
        "--control-vector",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="steer with a llama.cpp control-vector GGUF, times SCALE (default 1); repeatable, the vectors add up",
    )
    parser.add_argument(
        "--control-vector-layers",
        type=_layer_range,
        default=None,
        metavar="A-B",
        help="the layers the control vectors steer (default: all)",
    )
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="load a LoRA adapter GGUF, applied at SCALE (default 1) unless a request says otherwise; repeatable. "
        "The server names each by its file's stem: model \"BASE:STEM\" picks it",
    )
    templates = parser.add_mutually_exclusive_group()
    templates.add_argument(
        "--chat-template",
        default=None,
        help="for chat prompts: a llama.cpp built-in template (e.g. gemma, chatml) or one of the model's named "
        "templates (e.g. tool_use), instead of the model's own",
    )
    templates.add_argument(
        "--chat-template-file",
        default=None,
        metavar="PATH",
        help="a Jinja chat template file to use instead of the model's own",
    )


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
        type=_number(int, -1),
        default=-1,
        metavar="N",
        help="chat requests' thinking budget unless they name one (reasoning_budget_tokens): after N tokens of "
        "reasoning the engine ends the section; -1: no limit (default), 0: no thinking",
    )


# The sampling flags, by llama.cpp's names, and the request field each one sets. The CLI
# checks them through schemas.generation_params, as the server checks a request's fields.
# (flags, field, type, default, help); a default of None leaves the field to the server's default.
_SAMPLING_FLAGS = (
    (("--temperature", "--temp"), "temperature", float, DEFAULT_TEMPERATURE, "sampling temperature; 0 is greedy"),
    (("--top-k",), "top_k", int, 0, "keep the k most likely tokens; 0 is off"),
    (("--top-p",), "top_p", float, 1.0, "keep the most likely tokens up to this probability mass; 1 is off, 0 greedy"),
    (("--min-p",), "min_p", float, 0.0, "drop tokens less likely than this fraction of the top one; 0 is off"),
    (("--typical-p", "--typical"), "typical_p", float, 1.0, "locally typical sampling mass; 1 is off"),
    (("--top-n-sigma",), "top_n_sigma", float, 0.0, "keep logits within n deviations of the top one; <= 0 is off"),
    (("--xtc-probability",), "xtc_probability", float, 0.0, "chance per token that XTC cuts the top; 0 is off"),
    (("--xtc-threshold",), "xtc_threshold", float, 0.1, "XTC cuts all but the least likely token above this"),
    (("--mirostat",), "mirostat", int, 0, "2: Mirostat 2.0 replaces the filters above; 0 is off"),
    (("--mirostat-tau", "--mirostat-ent"), "mirostat_tau", float, 5.0, "Mirostat's target surprise, in bits"),
    (("--mirostat-eta", "--mirostat-lr"), "mirostat_eta", float, 0.1, "Mirostat's learning rate"),
    (("--repeat-penalty",), "repeat_penalty", float, 1.0, "penalise tokens already in the text; 1 is off"),
    (("--presence-penalty",), "presence_penalty", float, 0.0, "subtract this from tokens already generated (OpenAI's)"),
    (("--frequency-penalty",), "frequency_penalty", float, 0.0, "subtract this per earlier occurrence (OpenAI's)"),
    (("--dry-multiplier",), "dry_multiplier", float, 0.0, "DRY repetition penalty strength; 0 is off"),
    (("--dry-base",), "dry_base", float, 1.75, "DRY's growth per repeated token"),
    (("--dry-allowed-length",), "dry_allowed_length", int, 2, "repeats up to this long go unpenalised by DRY"),
    (("--dry-penalty-last-n",), "dry_penalty_last_n", int, 64, "tokens DRY looks back over"),
    (("--seed", "-s"), "seed", int, None, "random seed for reproducible sampling (default: a fresh one per run)"),
    (("--max-tokens", "-n"), "max_tokens", int, 256, "most tokens to generate"),
    (("--min-tokens",), "min_tokens", int, 0, "no end-of-generation token before this many tokens"),
)


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (as the server's request fields of the same names)")
    for flags, field, kind, default, text in _SAMPLING_FLAGS:
        group.add_argument(*flags, dest=field, type=kind, default=default, help=text)
    group.add_argument("--ignore-eos", action="store_true", help="never end on an end-of-generation token")
    group.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def _add_speculation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speculative decoding (output distributed as without it)")
    group.add_argument(
        "--spec",
        choices=SPEC_KINDS,
        default=None,
        help="draft tokens by prompt lookup (copying from the text so far), with --draft-model, or not at all "
        "(default: draft with --draft-model, else prompt-lookup)",
    )
    group.add_argument(
        "--draft-model",
        default=None,
        metavar="SPEC",
        help="a smaller GGUF sharing the model's vocabulary to draft with (a path or owner/repo:file.gguf)",
    )
    group.add_argument(
        "--draft-max", type=_number(int, 1, 256), default=32, help="most tokens a sequence drafts in one step"
    )


SPEC_KINDS = ("prompt-lookup", "draft", "off")


def check_speculation_options(args: argparse.Namespace, model_path) -> None:
    """--spec and --draft-model agree, and the draft model shares the model's vocabulary: else one line, exit 2.

    Sets args.spec to the kind in use and args.draft_model to the resolved path.
    """
    kind = args.spec or ("draft" if args.draft_model else "prompt-lookup")
    if kind == "draft" and not args.draft_model:
        raise SystemExit("helios-engine: --spec draft needs --draft-model")
    if kind != "draft" and args.draft_model:
        raise SystemExit(f"helios-engine: --draft-model is only used with --spec draft, not --spec {kind}")
    args.spec = kind
    if not args.draft_model:
        return
    from helios_core.model import Model, check_gguf_file
    from helios_core.resolve import resolve_model
    from helios_core.speculative import check_same_vocabulary

    args.draft_model = resolve_model(args.draft_model)
    check_gguf_file(args.draft_model)
    with Model(args.draft_model, vocab_only=True) as draft, Model(model_path, vocab_only=True) as target:
        try:
            check_same_vocabulary(draft, target)
        except ValueError as error:
            raise SystemExit(f"helios-engine: --draft-model {args.draft_model.name}: {error}") from None


def speculation(args: argparse.Namespace, model, n_seq: int, n_ctx_per_seq: int):
    """The Speculation the (checked) options ask for, None for --spec off; a draft model is loaded here."""
    from helios_core.model import Model
    from helios_core.speculative import DraftModel, PromptLookup, Speculation

    if args.spec == "off":
        return None
    if args.spec == "prompt-lookup":
        return Speculation(PromptLookup(), draft_max=args.draft_max)
    drafter = DraftModel(Model(args.draft_model), n_seq, n_ctx_per_seq=n_ctx_per_seq, n_threads=args.threads)
    return Speculation(drafter, draft_max=args.draft_max)


def generation_params(args: argparse.Namespace):
    """The parsed flags as GenerationParams, checked as the server checks a request's fields."""
    from helios_http.errors import APIError
    from helios_http.schemas import generation_params as checked

    body = {field: getattr(args, field) for _, field, *_ in _SAMPLING_FLAGS}
    body.update(ignore_eos=args.ignore_eos, stop=args.stop)
    try:
        return checked(body)
    except APIError as error:
        flag = next((flags[0] for flags, field, *_ in _SAMPLING_FLAGS if field == error.param), error.param)
        raise ValueError(f"{flag}: {error.message}") from None


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] or (
            action.default == argparse.SUPPRESS)
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def version() -> str:
    try:
        return importlib.metadata.version("helios-engine")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="helios-engine", description=__doc__.split("\n")[0], formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"helios-engine {version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="stream a completion to stdout", formatter_class=_HelpFormatter)
    _add_model_options(generate)
    _add_sampling_options(generate)
    _add_speculation_options(generate)
    generate.add_argument(
        "--prompt", "-p", required=True, help="the text to continue (or, with --chat, the user's message)"
    )
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    generate.add_argument("--system", default=None, help="a system message (with --chat)")

    serve = commands.add_parser("serve", help="run the OpenAI-compatible HTTP server", formatter_class=_HelpFormatter)
    _add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_number(int, 1, 65535), default=8000, help="port to listen on")
    serve.add_argument("--parallel", "-np", type=_positive_int, default=4, help="sequences decoded together")
    _add_speculation_options(serve)
    _add_reasoning_options(serve)
    serve.add_argument(
        "--pooling",
        choices=("mean", "cls", "last"),
        default=None,
        help="how /v1/embeddings pools the states of an input's tokens (default: the model's own, else mean)",
    )
    serve.add_argument(
        "--embedding-batch",
        type=_number(int, 1, 16384),
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
    serve.add_argument("--max-queue", type=_positive_int, default=64, help="requests waiting for a slot before 429")
    serve.add_argument(
        "--max-body-mb",
        type=_number(float, 0, low_open=True),
        default=8.0,
        help="largest request body in MiB; larger ones get 413 (default 8)",
    )
    serve.add_argument(
        "--request-timeout",
        type=_positive_seconds,
        default=30.0,
        help="seconds a client gets to send a request's headers, and again its body (default 30)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=512,
        help="open connections served at once; requests on more get 503 (default 512)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=_number(float, 0),
        default=10.0,
        help="seconds running requests get to finish after SIGTERM (default 10)",
    )
    serve.add_argument(
        "--n-predict",
        "--predict",
        type=_number(int, -1),
        default=-1,
        metavar="N",
        help="tokens a request may generate when it sets no limit of its own (max_tokens, max_output_tokens); "
        "-1 (or 0): until the context is full. Agents that send no limit (Codex) need it with a model that rambles "
        "(default -1)",
    )
    serve.add_argument(
        "--responses-store-max",
        type=_number(int, 0),
        default=1000,
        metavar="COUNT",
        help="responses kept in memory for previous_response_id and GET /v1/responses/{id}, least recently used "
        "out first; 0 keeps none (default 1000)",
    )
    serve.add_argument(
        "--responses-store-mb",
        type=_number(float, 0, low_open=True),
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
        help="serve a plug-in sampler factory, picked by a request's \"sampler\": NAME (repeatable)",
    )
    serve.add_argument(
        "--processor",
        action="append",
        default=[],
        metavar="NAME=MODULE:CALLABLE",
        help="serve a plug-in logits processor factory, picked by a request's \"processors\": [NAME] (repeatable)",
    )
    serve.add_argument(
        "--model-alias",
        action="append",
        default=[],
        type=_model_alias,
        metavar="NAME=SERVED",
        help="answer model NAME (* globs allowed, e.g. claude-*) with SERVED, the model's id or ID:ADAPTER; on "
        "/v1/messages any other name falls back to the model (repeatable; the first match wins)",
    )
    serve.add_argument("--verbose", "-v", action="store_true", help="log llama.cpp's own messages too")

    doctor = commands.add_parser(
        "doctor", help="say which llama.cpp build and CPU path this machine runs, and why",
        formatter_class=_HelpFormatter,
    )
    doctor.add_argument("--reprobe", action="store_true",
                        help="prove the CPU variants again instead of reading the cached verdict")

    worker = commands.add_parser(
        "rpc-worker",
        help="serve this machine's CPU (or GPUs) to `--rpc` clients: llama.cpp's RPC server",
        formatter_class=_HelpFormatter,
    )
    worker.add_argument("--host", default="127.0.0.1", help="address to listen on; RPC has no authentication")
    worker.add_argument("--port", type=_number(int, 1, 65535), default=50052, help="port to listen on")
    worker.add_argument("--threads", "-t", type=_positive_int, default=os.cpu_count() or 1,
                        help="CPU threads for the computations clients send")
    worker.add_argument(
        "--cache",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="keep tensors clients send on disk, so a restarted client's load is local (default DIR: "
        "$HELIOS_CACHE/rpc)",
    )
    return parser


def generate_command(args: argparse.Namespace) -> None:
    import dataclasses

    from helios_core import backend, chat
    from helios_core.generate import Generator
    from helios_core.model import Model
    from helios_core.resolve import resolve_model

    params = generation_params(args)  # bad settings fail before the model loads
    template = chat_template_option(args)  # a broken template file fails before the model loads
    path = resolve_model(args.model)
    check_lora_options(args, path)
    check_speculation_options(args, path)
    add_rpc_workers(args)
    # Closing the model closes the generator's context with it, on errors too.
    with (
        Model(path, n_gpu_layers=args.n_gpu_layers, tensor_split=args.tensor_split) as model,
        Generator(model, n_ctx=args.ctx_size, n_threads=args.threads,
                  speculation=speculation(args, model, 1, args.ctx_size)) as generator,
    ):
        apply_control_vectors(args, model, generator.ctx)
        verdict = backend.cpu_verdict()
        if verdict is not None and verdict.skipped:
            print(f"helios-engine: {verdict.summary()}", file=sys.stderr)
        if args.lora:
            params = dataclasses.replace(params, lora=load_lora_adapters(args, model))
        if args.chat:
            if template is None and model.chat_template() is None:
                print(no_chat_template_warning(model), file=sys.stderr)
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": args.prompt})
            text = chat.load(model, template).render(messages)
            prompt = model.vocab.tokenize(text, parse_special=True)
        else:
            prompt = args.prompt
        generation = generator.generate(prompt, params)
        for step in generation:
            sys.stdout.write(step.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        usage, timings = generation.usage, generation.timings
        print(
            f"[{usage.prompt_tokens} prompt tokens in {timings.prompt_ms:.0f} ms, "
            f"{usage.completion_tokens} generated at {timings.tokens_per_second(usage.completion_tokens):.1f} tok/s, "
            f"finish: {generation.finish_reason}]",
            file=sys.stderr,
        )


def no_chat_template_warning(model) -> str:
    return (
        f"helios-engine: warning: {model.description} has no chat template, so it is most likely a base model, "
        "not instruction-tuned: chat prompts use llama.cpp's built-in template for its architecture, and answers "
        "may not follow them (serve an instruction-tuned GGUF for chat; see README)"
    )


def chat_template_option(args: argparse.Namespace) -> str | None:
    """--chat-template's name, or the text of --chat-template-file (checked to parse); None for the model's own."""
    from helios_core import chat

    if args.chat_template_file:
        return chat.read_template_file(args.chat_template_file)
    return args.chat_template


def add_rpc_workers(args: argparse.Namespace, before_exit=None) -> None:
    """Register --rpc's workers (one line naming one that is unreachable), and exit cleanly if one is lost later."""
    from helios_core import backend, rpc

    # A lost worker (or any other fatal llama.cpp error) ends the process with one line, status 1.
    backend.exit_on_abort(before_exit)
    if args.rpc:
        rpc.add_workers(rpc.parse_endpoints(args.rpc))


def apply_control_vectors(args: argparse.Namespace, model, ctx) -> None:
    """--control-vector PATH[:SCALE] (summed) on --control-vector-layers, applied to `ctx`."""
    from helios_core import control_vector

    if not args.control_vector:
        if args.control_vector_layers:
            raise ValueError("--control-vector-layers needs a --control-vector")
        return
    specs = []
    for spec in args.control_vector:
        path, sep, scale = spec.rpartition(":")
        try:
            specs.append((path, float(scale)) if sep and path else (spec, 1.0))
        except ValueError:
            specs.append((spec, 1.0))  # a path with a colon in it
    control_vector.apply(ctx, control_vector.load_all(specs, model), layers=args.control_vector_layers)


def _path_and_scale(spec: str) -> tuple[str, float]:
    """PATH[:SCALE]; a path with a colon in it and no scale stays whole."""
    path, sep, scale = spec.rpartition(":")
    try:
        return (path, float(scale)) if sep and path else (spec, 1.0)
    except ValueError:
        return spec, 1.0


def check_lora_options(args: argparse.Namespace, model_path) -> None:
    """Refuse a bad --lora (missing, not a LoRA GGUF, another architecture, truncated) before the model loads."""
    from helios_core import lora

    architecture = lora.gguf_architecture(model_path)
    names: dict[str, str] = {}
    for spec in args.lora:
        path, _ = _path_and_scale(spec)
        lora.check_file(path, architecture)
        name = lora.adapter_name(path)
        if name in names:
            raise ValueError(f"--lora {path}: another adapter ({names[name]}) has the name {name!r}; rename one file")
        names[name] = path


def check_model_aliases(args: argparse.Namespace, model_path) -> None:
    """Refuse a --model-alias whose SERVED is not a name the server answers to: the model's id, or ID:ADAPTER."""
    from helios_core import lora

    served = [model_path.stem] + [f"{model_path.stem}:{lora.adapter_name(_path_and_scale(s)[0])}" for s in args.lora]
    for pattern, target in args.model_alias:
        if target not in served:
            raise ValueError(f"--model-alias {pattern}={target}: {target!r} is not served here; the names are "
                             f"{', '.join(map(repr, served))}")


def load_lora_adapters(args: argparse.Namespace, model) -> list:
    """--lora's adapters for `model`, in order (their ids), each with its default scale."""
    from helios_core import lora

    return [(lora.Adapter(model, path), scale) for path, scale in map(_path_and_scale, args.lora)]


def rpc_worker_command(args: argparse.Namespace) -> None:
    import signal
    import threading

    from helios_core import rpc
    from helios_core.resolve import helios_cache

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"helios-engine: warning: the RPC worker listens on {args.host}; RPC has no authentication, so "
              "anyone who can reach it can run computations on this machine and read what clients send",
              file=sys.stderr)
    cache = None if args.cache is None else (args.cache or helios_cache() / "rpc")
    # ggml's server loop never returns: it runs on a daemon thread, so Ctrl+C and SIGTERM end the process.
    worker = threading.Thread(
        target=rpc.serve_worker, args=(args.host, args.port), kwargs={"n_threads": args.threads, "cache_dir": cache},
        name="rpc-worker", daemon=True,
    )
    worker.start()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    while worker.is_alive():
        worker.join(0.5)
    # ggml's loop only ends when it cannot start (its reason is on stderr just above).
    print(f"helios-engine: the RPC worker could not serve on {args.host}:{args.port}", file=sys.stderr)
    raise SystemExit(1)


def doctor_command(args: argparse.Namespace) -> None:
    from helios_core import _llama, backend, cpu_variant

    folder = _llama.lib_dir()
    print(f"helios-engine {version()}")
    print(f"libraries: {folder}")
    flags = folder / "cmake-args"
    print(f"built with CMAKE_ARGS: {flags.read_text().strip() if flags.is_file() else '(unknown)'}")
    if args.reprobe and cpu_variant.variants(folder):
        cpu_variant.choose(folder, reprobe=True)
    verdict = backend.cpu_verdict()
    if verdict is None:
        print("CPU backend: linked into the build (no variants to choose from)")
    else:
        print(f"{verdict.summary()} [{verdict.how}; probe {verdict.seconds:.1f} s]")
        for name, why in verdict.skipped:
            print(f"  skipped {name}: {why}")
    for device in backend.devices():
        print(f"device {device.name}: {device.description} ({device.kind})")


def serve_command(args: argparse.Namespace) -> None:
    from helios_http.server import serve

    raise SystemExit(serve(args))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            generate_command(args)
        elif args.command == "rpc-worker":
            rpc_worker_command(args)
        elif args.command == "doctor":
            doctor_command(args)
        else:
            serve_command(args)
    except (HeliosError, ValueError) as e:
        print(f"helios-engine: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
