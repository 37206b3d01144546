"""A soak of the prompt cache: an agent trace of 500 turns with clients leaving at random, then nothing leaked.

Marked slow: `pytest -m slow tests/test_soak_prompt_cache.py` (4.5 s a turn on a
contended 2-core machine; far less on a quiet one). Three
client threads (each with its own seeded RNG) each keep two conversations over
one shared system-and-tools prefix, on a server with 2 slots and a small RAM
tier, so prefixes move between slots and tier all the time; about one turn in
six leaves mid-stream. A conversation starts afresh after 8 turns, so
prompts stay within the context. Afterwards no slot is busy, the tier is
within its bound and has served turns, and the server's RSS grew by less than
10% after the warm-up.

HELIOS_CACHE_SOAK_TURNS sets the number of turns (default 500).
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.server_process import PATIENCE, ServerProcess, metric, rss_kib, wait_until

N_TURNS = int(os.environ.get("HELIOS_CACHE_SOAK_TURNS", "500"))
WARM_UP = 24
CLIENTS = 3
TIER_MIB = 24
SEED = 25
PREFIX = "You are a coding agent. Tools: read(path), write(path, text), run(command), search(query). " * 8


def turn(rng: random.Random, client: httpx.Client, history: list[str], index: int) -> str:
    """One turn of a conversation; what happened to it, in a word. An answered turn grows the history."""
    prompt = PREFIX + "".join(history) + f"\nUser: step {len(history)} of task {index}, what next?\nAssistant:"
    body = {"prompt": prompt, "max_tokens": rng.randint(1, 16), "temperature": 0.8, "seed": rng.randrange(2**31)}
    body["stream"] = True
    leave = rng.random() < 1 / 6
    with client.stream("POST", "/v1/completions", json=body, timeout=PATIENCE) as r:
        assert r.status_code == 200
        for n, _ in enumerate(r.iter_lines()):
            if leave and n >= rng.randint(0, 4):
                return "left a stream"
    # The client's own rendering of the answer, as agents send back: the next turn extends the last.
    history.append(f"\nUser: step {len(history)} of task {index}, what next?\nAssistant: ok.")
    return "answered"


def run_clients(url: str, n_turns: int, seed: int) -> int:
    def client_thread(index: int) -> int:
        rng = random.Random(seed * 100 + index)
        conversations: list[list[str]] = [[], []]
        done = 0
        with httpx.Client(base_url=url) as client:
            for _ in range(n_turns // CLIENTS + (index < n_turns % CLIENTS)):
                which = rng.randrange(len(conversations))
                if len(conversations[which]) >= 8:
                    conversations[which] = []
                turn(rng, client, conversations[which], index * 10 + which)
                done += 1
        return done

    with ThreadPoolExecutor(CLIENTS) as pool:
        return sum(pool.map(client_thread, range(CLIENTS)))


@pytest.mark.slow
def test_an_agent_soak_leaks_no_slot_keeps_the_tier_bound_and_little_memory():
    with ServerProcess("--ctx-size", "1024", "--parallel", "2", "--cache-ram", str(TIER_MIB)) as server:
        run_clients(server.url, WARM_UP, seed=SEED + 1)
        wait_until(lambda: metric(server.url, "slots_busy") == 0, "free slots")
        rss_before = rss_kib(server.pid)
        assert run_clients(server.url, N_TURNS, seed=SEED) == N_TURNS
        wait_until(lambda: metric(server.url, "slots_busy") == 0, "free slots")
        wait_until(lambda: metric(server.url, "requests_queued") == 0, "an empty queue")
        rss_after = rss_kib(server.pid)
        print(
            f"\ncache soak: {N_TURNS} turns; tier hits {metric(server.url, 'prompt_cache_tier_hits_total'):.0f}, "
            f"{metric(server.url, 'prompt_cache_tier_bytes') / 2**20:.1f} MiB held; "
            f"RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
        )
        assert metric(server.url, "prompt_cache_tier_bytes") <= TIER_MIB * 2**20
        assert metric(server.url, "prompt_cache_tier_hits_total") > 0
        assert rss_after < 1.10 * rss_before
        log = server.log()
        assert "Traceback" not in log and "ERROR" not in log
