"""The prompt cache through `helios-engine serve`: the RAM tier behind one slot, its /metrics, cached_tokens."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PATIENCE
from tests.server_process import ServerProcess, metric
from tests.test_cli import run_cli

SYSTEM = "You are a careful assistant. Tools: search(query), open(url), summarize(text). " * 12


@pytest.fixture(scope="module")
def slot_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("slots")


@pytest.fixture(scope="module")
def server(slot_dir):
    proc = ServerProcess(
        "--ctx-size", "1024", "--parallel", "1", "--cache-ram", "64", "--slot-save-path", str(slot_dir)
    )
    yield proc
    proc.stop()


def slot_action(server, action: str, body: dict | None = None, slot: str = "0") -> httpx.Response:
    return httpx.post(f"{server.url}/slots/{slot}?action={action}", json=body, timeout=PATIENCE)


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
    assert metric(server.url, "prompt_cache_tier_hits_total") == 1
    assert metric(server.url, "prompt_cache_tier_tokens_restored_total") >= first["prompt_tokens"] - 1
    assert 0 < metric(server.url, "prompt_cache_tier_bytes") <= 64 * 1024 * 1024


def test_a_slot_saved_erased_and_restored_serves_its_prefix_again(server):
    usage = complete(server, SYSTEM + "User B: name a river.")
    saved = slot_action(server, "save", {"filename": "b.slot"}).json()
    assert saved["id_slot"] == 0 and saved["filename"] == "b.slot" and saved["n_written"] > 0
    assert saved["n_saved"] >= usage["prompt_tokens"]
    assert slot_action(server, "erase").json() == {"id_slot": 0, "n_erased": saved["n_saved"]}
    assert httpx.get(f"{server.url}/slots", timeout=PATIENCE).json()[0]["n_prompt_tokens"] == 0
    restored = slot_action(server, "restore", {"filename": "b.slot"}).json()
    assert restored["n_restored"] == saved["n_saved"] and restored["n_read"] == saved["n_written"]
    again = complete(server, SYSTEM + "User B: name a river. And a sea?")
    assert again["prompt_tokens_details"]["cached_tokens"] >= usage["prompt_tokens"] - 1


@pytest.mark.parametrize("filename", ["../b.slot", "a/b.slot", "/etc/passwd", ".hidden", "..", "", 7])
def test_a_filename_that_is_not_a_plain_name_is_a_400_naming_filename(server, filename):
    for action in ("save", "restore"):
        response = slot_action(server, action, {"filename": filename})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "filename"


def test_a_corrupt_file_is_refused_with_a_400_and_the_server_keeps_serving(server, slot_dir):
    complete(server, SYSTEM + "User C: name a lake.")
    assert slot_action(server, "save", {"filename": "c.slot"}).status_code == 200
    data = bytearray((slot_dir / "c.slot").read_bytes())
    data[-50] ^= 0xFF
    (slot_dir / "c.slot").write_bytes(data)
    response = slot_action(server, "restore", {"filename": "c.slot"})
    assert response.status_code == 400 and "corrupt" in response.json()["error"]["message"]
    assert complete(server, "Still serving?")["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("slot", "query", "param"), [("9", "erase", "id_slot"), ("x", "erase", "id_slot"), ("0", "fly", "action")]
)
def test_a_bad_slot_or_action_is_a_400_naming_it(server, slot, query, param):
    response = slot_action(server, query, slot=slot)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_a_restart_with_cache_persist_is_warm(tmp_path):
    args = ("--ctx-size", "1024", "--parallel", "1", "--slot-save-path", str(tmp_path), "--cache-persist")
    first = ServerProcess(*args)
    try:
        cold = complete(first, SYSTEM + "User D: name a desert.")
    finally:
        log = first.stop()
    assert "1 prefixes written" in log
    second = ServerProcess(*args)
    try:
        warm = complete(second, SYSTEM + "User D: name a desert. And a forest?")
        assert metric(second.url, "prompt_cache_tier_hits_total") == 1
    finally:
        log = second.stop()
    assert "1 prefixes read" in log
    assert warm["prompt_tokens_details"]["cached_tokens"] >= cold["prompt_tokens"] - 1


def test_cache_persist_without_a_folder_is_a_one_line_error():
    result = run_cli("serve", "--cache-persist")
    assert result.returncode == 2 and "--cache-persist needs --slot-save-path" in result.stderr
    assert "Traceback" not in result.stderr
