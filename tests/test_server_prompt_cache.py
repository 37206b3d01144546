"""The prompt cache through `helios-engine serve`: the RAM tier behind one slot, its /metrics, cached_tokens."""

from __future__ import annotations

import httpx
import pytest

from tests.server_process import ServerProcess
from tests.test_server import PATIENCE, metric

SYSTEM = "You are a careful assistant. Tools: search(query), open(url), summarize(text). " * 12


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("--ctx-size", "1024", "--parallel", "1", "--cache-ram", "64")
    yield proc
    proc.stop()


def complete(server, prompt: str) -> dict:
    body = {"model": "m", "prompt": prompt, "max_tokens": 1, "temperature": 0}
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=PATIENCE)
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def test_a_conversation_returning_to_a_reused_slot_gets_its_prefix_from_the_tier(server):
    first = complete(server, SYSTEM + "User A: what is the tallest mountain?")
    complete(server, "An unrelated prompt about baking bread, long enough to need the slot. " * 4)
    again = complete(server, SYSTEM + "User A: what is the tallest mountain? And the deepest lake?")
    assert again["prompt_tokens_details"]["cached_tokens"] >= first["prompt_tokens"] - 1
    assert metric(server, "prompt_cache_tier_hits_total") == 1
    assert metric(server, "prompt_cache_tier_tokens_restored_total") >= first["prompt_tokens"] - 1
    assert 0 < metric(server, "prompt_cache_tier_bytes") <= 64 * 1024 * 1024
