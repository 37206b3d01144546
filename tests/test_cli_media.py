"""`helios-engine generate --image` and serve's media flags as a person runs them."""

from __future__ import annotations

import re

import pytest

from benchmarks.harness.media import MTMD_MEDIA
from benchmarks.harness.mmproj import TOKENS_PER_IMAGE, write_mmproj
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory):
    return write_mmproj(tmp_path_factory.mktemp("mmproj") / "tiny.gguf")


def test_generate_reads_an_image_before_the_prompt(mmproj):
    image = str(MTMD_MEDIA / "test-1.jpeg")
    result = run_cli(
        *("generate", "--mmproj", str(mmproj), "--image", image, "--prompt", "This picture shows"),
        *("--max-tokens", "2", "--temperature", "0", "--ctx-size", "256"),
    )
    assert result.returncode == 0, result.stderr
    report = re.search(r"\[(\d+) prompt tokens in", result.stderr)
    assert report and int(report[1]) >= TOKENS_PER_IMAGE + 4


def test_an_image_without_a_projector_is_one_line():
    result = run_cli("generate", "--image", str(MTMD_MEDIA / "test-1.jpeg"), "--prompt", "hi")
    assert result.returncode == 2
    assert result.stderr == "helios-engine: --image and --audio need --mmproj, the model's projector\n"


def test_serve_with_a_missing_projector_is_one_line_before_anything_loads():
    result = run_cli("serve", "--mmproj", "/no/such/mmproj.gguf")
    assert result.returncode == 2
    assert result.stderr.startswith("helios-engine: --mmproj /no/such/mmproj.gguf: no such file")
    assert result.stderr.count("\n") == 1
