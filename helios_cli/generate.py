"""`helios-engine generate`: one completion (or chat answer) streamed to stdout, timings to stderr."""

from __future__ import annotations

import argparse
import sys

from helios_cli.media_options import add_generate_media_options, check_generate_media, media_prompt_of
from helios_cli.options import (
    HelpFormatter,
    add_model_options,
    add_rpc_workers,
    add_speculation_options,
    apply_control_vectors,
    chat_template_option,
    check_lora_options,
    check_speculation_options,
    load_lora_adapters,
    no_chat_template_warning,
    speculation,
)
from helios_core.sampling.params import SETTINGS, SETTINGS_BY_NAME, SettingError


def add_command(commands) -> None:
    """The `generate` sub-command and its flags, on argparse's sub-parsers `commands`."""
    generate = commands.add_parser("generate", help="stream a completion to stdout", formatter_class=HelpFormatter)
    add_model_options(generate)
    _add_sampling_options(generate)
    add_speculation_options(generate)
    add_generate_media_options(generate)
    generate.add_argument(
        "--prompt", "-p", required=True, help="the text to continue (or, with --chat, the user's message)"
    )
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    generate.add_argument("--system", default=None, help="a system message (with --chat)")


def generation_params(args: argparse.Namespace):
    """The parsed flags as GenerationParams, checked against the table's bounds as a request's fields are."""
    from helios_core.generate import GenerationParams

    settings = {row.name: getattr(args, row.name) for row in SETTINGS}
    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be >= 1; got {args.max_tokens}")
    try:
        return GenerationParams(**settings, max_tokens=args.max_tokens, ignore_eos=args.ignore_eos, stop=args.stop)
    except SettingError as error:
        raise ValueError(f"{SETTINGS_BY_NAME[error.name].flags[0]}: {error}") from None


def run(args: argparse.Namespace) -> None:
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
    check_generate_media(args)
    add_rpc_workers(args)
    # Closing the model closes the generator's context with it, on errors too.
    with (
        Model(path, n_gpu_layers=args.n_gpu_layers, tensor_split=args.tensor_split) as model,
        Generator(
            model, n_ctx=args.ctx_size, n_threads=args.threads, speculation=speculation(args, model, 1, args.ctx_size)
        ) as generator,
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
            system = [{"role": "system", "content": args.system}] if args.system else []

            def render(content: str) -> str:
                return chat.load(model, template).render([*system, {"role": "user", "content": content}])

            prompt = model.vocab.tokenize(render(args.prompt), parse_special=True)
        else:
            render, prompt = str, args.prompt
        if args.image or args.audio:  # the files' markers before the prompt's text
            prompt = media_prompt_of(args, model, args.prompt, render, generator.ctx.n_ubatch)
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


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (as the server's request fields of the same names)")
    for row in SETTINGS:
        group.add_argument(*row.flags, dest=row.name, type=row.kind, default=row.default, help=row.help)
    group.add_argument("--max-tokens", "-n", type=int, default=256, help="most tokens to generate")
    group.add_argument("--ignore-eos", action="store_true", help="never end on an end-of-generation token")
    group.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
