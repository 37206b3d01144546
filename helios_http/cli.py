"""`helios-engine`: the command line.

helios-engine generate [--model SPEC] --prompt TEXT [--chat] [sampling options]
helios-engine serve    [--model SPEC] [--host H] [--port P] ...
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys

from helios_core.errors import HeliosError


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
        "--n-gpu-layers", "-ngl", type=int, default=0, help="layers to offload to the GPU in a CUDA build (-1 = all)"
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


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", "--temp", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--min-p", type=float, default=0.0)
    parser.add_argument("--repeat-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-tokens", "-n", type=int, default=256)
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def _version() -> str:
    try:
        return importlib.metadata.version("helios-engine")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="helios-engine", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"helios-engine {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="stream a completion to stdout")
    _add_model_options(generate)
    _add_sampling_options(generate)
    generate.add_argument("--prompt", "-p", required=True)
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    generate.add_argument("--system", default=None, help="a system message (with --chat)")

    serve = commands.add_parser("serve", help="run the OpenAI-compatible HTTP server")
    _add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_number(int, 1, 65535), default=8000)
    serve.add_argument("--parallel", "-np", type=_positive_int, default=4, help="sequences decoded together")
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
    serve.add_argument("--verbose", "-v", action="store_true", help="log llama.cpp's own messages too")
    return parser


def generate_command(args: argparse.Namespace) -> None:
    from helios_core import chat
    from helios_core.generate import GenerationParams, Generator
    from helios_core.model import Model
    from helios_core.resolve import resolve_model

    params = GenerationParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        seed=args.seed,
        stop=args.stop,
        repetition_penalty=args.repeat_penalty,
    )
    template = chat_template_option(args)  # a broken template file fails before the model loads
    # Closing the model closes the generator's context with it, on errors too.
    with (
        Model(resolve_model(args.model), n_gpu_layers=args.n_gpu_layers) as model,
        Generator(model, n_ctx=args.ctx_size, n_threads=args.threads) as generator,
    ):
        if args.chat:
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


def chat_template_option(args: argparse.Namespace) -> str | None:
    """--chat-template's name, or the text of --chat-template-file (checked to parse); None for the model's own."""
    from helios_core import chat

    if args.chat_template_file:
        return chat.read_template_file(args.chat_template_file)
    return args.chat_template


def serve_command(args: argparse.Namespace) -> None:
    from helios_http.server import serve

    raise SystemExit(serve(args))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            generate_command(args)
        else:
            serve_command(args)
    except (HeliosError, ValueError) as e:
        print(f"helios-engine: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
