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
from helios_core.sampling import DEFAULT_TEMPERATURE

# The sampling flags, by llama.cpp's names, and the request field each one sets. The CLI
# checks them through schemas.generation_params, as the server checks a request's fields.
# (flags, field, type, default, help); a default of None leaves the field to the server's default.
SAMPLING_FLAGS = (
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
    """The parsed flags as GenerationParams, checked as the server checks a request's fields."""
    from helios_http.errors import APIError
    from helios_http.schemas import generation_params as checked

    body = {field: getattr(args, field) for _, field, *_ in SAMPLING_FLAGS}
    body.update(ignore_eos=args.ignore_eos, stop=args.stop)
    try:
        return checked(body)
    except APIError as error:
        flag = next((flags[0] for flags, field, *_ in SAMPLING_FLAGS if field == error.param), error.param)
        raise ValueError(f"{flag}: {error.message}") from None


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
    for flags, field, kind, default, text in SAMPLING_FLAGS:
        group.add_argument(*flags, dest=field, type=kind, default=default, help=text)
    group.add_argument("--ignore-eos", action="store_true", help="never end on an end-of-generation token")
    group.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
