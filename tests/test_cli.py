"""`helios-engine generate` as a person runs it."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helios_http.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_generate_streams_text_and_reports_usage():
    result = run_cli("generate", "--prompt", "The three primary colors are", "--max-tokens", "8",
                     "--temperature", "0", "--ctx-size", "512", "--threads", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != ""
    assert "8 generated" in result.stderr and "finish: length" in result.stderr


def test_generate_with_chat_template_and_stop():
    result = run_cli("generate", "--chat", "--prompt", "Count: one, two", "--max-tokens", "30",
                     "--temperature", "0", "--stop", ",", "--ctx-size", "512")
    assert result.returncode == 0, result.stderr
    assert "," not in result.stdout


def test_a_missing_model_is_a_one_line_error_not_a_traceback():
    result = run_cli("generate", "--model", "/no/such/model.gguf", "--prompt", "hi")
    assert result.returncode == 2
    assert "model file not found: /no/such/model.gguf" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_sampling_option_is_a_clear_error():
    result = run_cli("generate", "--prompt", "hi", "--top-p", "1.5", "--ctx-size", "256")
    assert result.returncode == 2
    assert "top_p must be in (0, 1]" in result.stderr
