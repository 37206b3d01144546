"""What `generate` and `serve` share: option types, the model and speculation flags, and the
helpers that turn those options into objects (adapters, control vectors, a Speculation, RPC workers).

Each check fails with one line (a SystemExit or a ValueError that main turns into exit 2) before
the model loads, so a typo costs no load.
"""

from __future__ import annotations

import argparse

SPEC_KINDS = ("prompt-lookup", "draft", "off")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = (
            action.default is None
            or action.default is False
            or action.default == []
            or (action.default == argparse.SUPPRESS)
        )
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def number(kind, low, high=None, *, low_open: bool = False):
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


positive_int = number(int, 1)
positive_seconds = number(float, 0, low_open=True)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="a .gguf path, owner/repo:file.gguf from the Hugging Face cache, or nothing for the embedded Gemma 3 270M",
    )
    parser.add_argument(
        "--ctx-size", "-c", type=positive_int, default=4096, help="context size in tokens (default 4096)"
    )
    parser.add_argument("--threads", "-t", type=positive_int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--n-gpu-layers",
        "-ngl",
        type=int,
        default=0,
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
        'The server names each by its file\'s stem: model "BASE:STEM" picks it',
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


def add_speculation_options(parser: argparse.ArgumentParser) -> None:
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
        "--draft-max", type=number(int, 1, 256), default=32, help="most tokens a sequence drafts in one step"
    )


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


def speculation(args: argparse.Namespace, runtime, model, n_seq: int, n_ctx_per_seq: int):
    """The Speculation the (checked) options ask for, None for --spec off; a draft model is loaded here,
    owned by `runtime` (a helios_core.runtime.Runtime) with its context."""
    from helios_core.model import Model
    from helios_core.speculative import DraftModel, PromptLookup, Speculation

    if args.spec == "off":
        return None
    if args.spec == "prompt-lookup":
        return Speculation(PromptLookup(), draft_max=args.draft_max)
    draft = runtime.own(Model(args.draft_model))
    drafter = runtime.own(DraftModel(draft, n_seq, n_ctx_per_seq=n_ctx_per_seq, n_threads=args.threads))
    return Speculation(drafter, draft_max=args.draft_max)


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
    specs = [path_and_scale(spec) for spec in args.control_vector]
    control_vector.apply(ctx, control_vector.load_all(specs, model), layers=args.control_vector_layers)


def path_and_scale(spec: str) -> tuple[str, float]:
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
        path, _ = path_and_scale(spec)
        lora.check_file(path, architecture)
        name = lora.adapter_name(path)
        if name in names:
            raise ValueError(f"--lora {path}: another adapter ({names[name]}) has the name {name!r}; rename one file")
        names[name] = path


def load_lora_adapters(args: argparse.Namespace, model) -> list:
    """--lora's adapters for `model`, in order (their ids), each with its default scale."""
    from helios_core import lora

    return [(lora.Adapter(model, path), scale) for path, scale in map(path_and_scale, args.lora)]


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
