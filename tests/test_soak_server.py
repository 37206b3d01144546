"""A soak of a real server: 500 mixed requests, some clients leaving at random points, then nothing leaked.

Marked slow (minutes): `pytest -m slow tests/test_soak_server.py`. Four
client threads, each with its own seeded RNG, send chat and completion
requests, streamed or whole; about a quarter of the clients leave early:
mid-stream, before a whole response (a short client timeout), or in the
middle of uploading their body. Afterwards no slot is busy, the server's
open file descriptors are back to their count after the warm-up, and its
RSS grew by less than 10%.

HELIOS_SOAK_REQUESTS sets the number of requests (default 500).
"""

from __future__ import annotations

import collections
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.server_process import PATIENCE, ServerProcess, connect, metric, open_fds, rss_kib, wait_until

N_REQUESTS = int(os.environ.get("HELIOS_SOAK_REQUESTS", "500"))
WARM_UP = 40
CLIENTS = 4
SEED = 8

PROMPTS = ["Tell me about the sea.", "List three colors.", "Once upon a time", "Explain rain to a child."]


def one_request(rng: random.Random, client: httpx.Client, port: int) -> str:
    """Send one request of a random kind; what happened to it, in a word."""
    chat = rng.random() < 0.5
    prompt = rng.choice(PROMPTS)
    body = {"max_tokens": rng.randint(1, 48), "temperature": 0.8, "seed": rng.randrange(2**31)}
    body.update({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})
    path = "/v1/chat/completions" if chat else "/v1/completions"
    leave = rng.random()
    if leave < 0.05:  # hang up in the middle of the upload
        sock = connect(port)
        head = f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b'{"max_tokens": 5,')
        sock.close()
        return "aborted upload"
    if rng.random() < 0.5:
        body["stream"] = True
        with client.stream("POST", path, json=body, timeout=PATIENCE) as r:
            if leave < 0.25:  # read a few chunks, then leave
                lines = r.iter_lines()
                for _ in range(rng.randint(0, 6)):
                    if next(lines, None) is None:
                        break
                return "left a stream"
            lines = [line for line in r.iter_lines() if line]
            assert r.status_code == 200 and lines[-1] == "data: [DONE]", lines[-3:]
            return "streamed"
    if leave < 0.25:  # give up before the response: the server sees the connection close
        try:
            client.post(path, json=body, timeout=rng.uniform(0.05, 1.0))
        except httpx.TimeoutException:
            return "left early"
        return "answered"
    r = client.post(path, json=body, timeout=PATIENCE)
    assert r.status_code == 200, r.text
    return "answered"


def run_clients(url: str, port: int, n_requests: int, seed: int) -> collections.Counter:
    def client_thread(index: int) -> collections.Counter:
        rng = random.Random(seed * 100 + index)
        outcomes: collections.Counter[str] = collections.Counter()
        with httpx.Client(base_url=url) as client:
            for _ in range(n_requests // CLIENTS + (index < n_requests % CLIENTS)):
                outcomes[one_request(rng, client, port)] += 1
        return outcomes

    with ThreadPoolExecutor(CLIENTS) as pool:
        return sum(pool.map(client_thread, range(CLIENTS)), collections.Counter())


def client_connections(port: int) -> int:
    """The server's TCP connections on `port` that are open or waiting for it to close them (from /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                # 01 ESTABLISHED, 08 CLOSE_WAIT: both still hold a file descriptor in the server.
                if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                    count += 1
    return count


def quiet(server: ServerProcess) -> None:
    """Wait until nothing runs and no client connection is left in the server."""
    wait_until(lambda: metric(server.url, "slots_busy") == 0, "free slots")
    wait_until(lambda: metric(server.url, "requests_queued") == 0, "an empty queue")
    wait_until(lambda: client_connections(server.port) == 0, "every client connection closed")


@pytest.mark.slow
def test_a_soak_leaks_no_slot_no_descriptor_and_little_memory():
    with ServerProcess("--ctx-size", "512", "--parallel", "2") as server:
        run_clients(server.url, server.port, WARM_UP, seed=SEED + 1)
        quiet(server)
        fds_before, rss_before = open_fds(server.pid), rss_kib(server.pid)

        started = time.monotonic()
        outcomes = run_clients(server.url, server.port, N_REQUESTS, seed=SEED)
        elapsed = time.monotonic() - started
        quiet(server)
        fds_after, rss_after = open_fds(server.pid), rss_kib(server.pid)
        statuses = {
            line.split("{", 1)[1].rsplit("}", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"{server.url}/metrics").text.splitlines()
            if line.startswith("helios_requests_total{")
        }
        print(
            f"\nsoak: {sum(outcomes.values())} requests in {elapsed:.0f} s: {dict(outcomes)}; "
            f"fds {fds_before} -> {fds_after}; RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB "
            f"({100 * (rss_after - rss_before) / rss_before:+.1f}%); server counted {statuses}"
        )

        assert sum(outcomes.values()) == N_REQUESTS
        assert metric(server.url, "slots_busy") == 0
        assert fds_after == fds_before
        assert rss_after < 1.10 * rss_before
        # /health answers 503 while the model loads; nothing else may be a 5xx.
        assert not [labels for labels in statuses if 'status="5' in labels and "/health" not in labels]
        log = server.log()
        assert "Traceback" not in log and "ERROR" not in log
