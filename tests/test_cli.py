"""`helios-engine generate` as a person runs it."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import THREADS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helios_http.cli", *args, "--threads", str(THREADS)],
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
    assert "top_p must be in (0, 1]" in result.stderr


def test_version_names_the_installed_package():
    result = run_cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"helios-engine \d+\.\d+\.\d+\S*\n", result.stdout)
