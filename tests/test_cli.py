"""`helios-engine generate` as a person runs it."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import THREADS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helios_cli", *args, "--threads", str(THREADS)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_streams_text_and_reports_usage():
    result = run_cli(
        "generate",
        "--prompt",
        "The three primary colors are",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "--ctx-size",
        "512",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != ""
    report = re.search(r"\[(\d+) prompt tokens in .* (\d+) generated at .* finish: (\w+)\]", result.stderr)
    assert report, result.stderr
    prompt_tokens, generated, finish = int(report[1]), int(report[2]), report[3]
    assert prompt_tokens == 6  # BOS and five words
    # The CLI cannot ban end-of-generation tokens: one may end the run before max_tokens, with "stop".
    assert (generated, finish) == (8, "length") or (generated < 8 and finish == "stop")


def test_generate_with_chat_template_and_stop():
    args = (
        "generate",
        "--chat",
        "--prompt",
        "Say: red, green, blue",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--ctx-size",
        "512",
    )
    free = run_cli(*args)
    assert free.returncode == 0, free.stderr
    # The default model carries no chat template: --chat says what that means, in one line.
    assert free.stderr.count("has no chat template, so it is most likely a base model") == 1
    assert "," in free.stdout  # the same run without the stop string writes it
    stopped = run_cli(*args, "--stop", ",")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == free.stdout.split(",")[0] + "\n"
    assert "finish: stop" in stopped.stderr


def test_a_missing_model_is_a_one_line_error_not_a_traceback():
    result = run_cli("generate", "--model", "/no/such/model.gguf", "--prompt", "hi")
    assert result.returncode == 2
    assert "model file not found: /no/such/model.gguf" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_sampling_option_is_a_clear_error():
    result = run_cli("generate", "--prompt", "hi", "--top-p", "1.5", "--ctx-size", "256")
    assert result.returncode == 2
    assert result.stderr == "helios-engine: --top-p: top_p must be in [0.0, 1.0]; got 1.5\n"


def parsed(*argv: str):
    from helios_cli.generate import generation_params
    from helios_cli.main import build_parser

    return generation_params(build_parser().parse_args(["generate", "--prompt", "hi", *argv]))


def test_the_cli_and_the_server_read_sampling_settings_alike():
    from helios_http.schemas import parse_completion

    def served(**fields):
        return parse_completion({"prompt": "hi", **fields}).sampling.params(n_vocab=10)

    # top_p 0 is the smallest nucleus, one token: greedy, on both.
    assert parsed("--top-p", "0").temperature == served(top_p=0).temperature == 0.0
    # One default temperature everywhere.
    from helios_core.generate import GenerationParams
    from helios_core.sampling import DEFAULT_TEMPERATURE

    assert parsed().temperature == served().temperature == GenerationParams().temperature == DEFAULT_TEMPERATURE
    cli = parsed(
        "--typical-p",
        "0.9",
        "--dry-multiplier",
        "0.8",
        "--mirostat",
        "2",
        "--min-tokens",
        "3",
        "--ignore-eos",
        "--presence-penalty",
        "0.5",
    )
    server = served(
        typical_p=0.9,
        dry_multiplier=0.8,
        mirostat=2,
        min_tokens=3,
        ignore_eos=True,
        presence_penalty=0.5,
        max_tokens=256,
    )
    names = ("typical_p", "dry_multiplier", "mirostat", "min_tokens", "ignore_eos", "presence_penalty", "max_tokens")
    assert [getattr(cli, n) for n in names] == [getattr(server, n) for n in names]


def test_every_option_says_what_it_does_and_its_default():
    from helios_cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps sub-commands here
    for name in ("generate", "serve"):
        command = commands[name]
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
                shown = command.formatter_class(prog=name)._get_help_string(action)
                assert "default" in shown, f"{name} {action.option_strings[0]} does not show its default"
        assert "(default: 1.0)" in text if name == "generate" else "(default: 8000)" in text


def test_version_names_the_installed_package():
    result = run_cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"helios-engine \d+\.\d+\.\d+\S*\n", result.stdout)
