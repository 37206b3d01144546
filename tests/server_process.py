"""Real `helios-engine serve` processes for tests, shared where their flags agree, and the ways tests talk to them.

Every wait here is for an event (a line, a metric, a closed socket) with a
generous deadline that only bounds a failure: this machine is shared and slow.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import httpx

from benchmarks.harness import free_port, wait_healthy
from helios_core.model import Model
from helios_core.resolve import default_model_path
from tests.conftest import PATIENCE, THREADS, eog_bias

__all__ = [
    "KEYED",
    "PATIENCE",
    "PLAIN",
    "REHEARSAL",
    "REHEARSED",
    "ServerProcess",
    "SharedServers",
    "connect",
    "free_port",
    "metric",
    "no_eog",
    "open_fds",
    "parse_response",
    "read_until_closed",
    "rss_kib",
    "thinking",
    "wait_healthy",
    "wait_until",
]

# The flags of the server that most HTTP test modules share (the `shared_server` fixture): 1024 tokens
# a slot, 4 slots, mean pooling for /v1/embeddings, bodies up to 1 MiB, and 16 tokens for a request
# that sets no limit (else a base model writes until its slot is full). A module whose tests need
# other flags starts a server of its own.
PLAIN = ("--ctx-size", "1024", "--parallel", "4", "--pooling", "mean", "--max-body-mb", "1", "--n-predict", "16")
# A server that wants the API key "sesame" on every route but /health and /metrics: test_messages_api's
# (bodies up to 256 KiB, the scripted sampler, Claude model names), test_http_auth's and test_server's.
KEYED = (
    "--ctx-size", "1024", "--parallel", "2", "--api-key", "sesame", "--metrics-public", "--max-body-mb", "0.25",
    "--sampler", "script=tests.scripted_sampler:scripted",
    "--model-alias", f"claude-haiku-*={default_model_path().stem}",
)  # fmt: skip
# A server whose every request that names no sampler plays an agent's two turns (tests.scripted_sampler's
# rehearsal, by --default-plugins): a get_weather call for Paris, then, once "21 C" is in the prompt,
# the answer "Sunny.". Clients that send only their API's own fields run a tool round trip through it.
REHEARSAL = {
    "sampler": "rehearsal",
    "sampler_args": {"tool": "get_weather", "arguments": {"city": "Paris"}, "seen": "21 C", "answer": "Sunny."},
}
REHEARSED = (
    "--ctx-size", "1024", "--parallel", "2",
    "--sampler", "rehearsal=tests.scripted_sampler:rehearsal", "--sampler", "script=tests.scripted_sampler:scripted",
    "--default-plugins", json.dumps(REHEARSAL),
)  # fmt: skip


def thinking(template: os.PathLike | str) -> tuple[str, ...]:
    """The flags of a server that renders `template`, parses its reasoning as <think> sections and offers
    the scripted sampler (tests/scripted_sampler.py), which writes a given text whatever the model says."""
    return (
        "--ctx-size", "512", "--parallel", "2", "--reasoning-format", "think", "--chat-template-file", str(template),
        "--sampler", "script=tests.scripted_sampler:scripted",
    )  # fmt: skip


class ServerProcess:
    """`helios-engine serve ARGS` on a free port, healthy once constructed (unless wait=False).

    Its output goes to a file, not a pipe: a pipe nobody reads fills up with the
    access log and stalls the server. env: variables to set beside the inherited
    ones. Unless ARGS name --threads, the engine runs on the suite's thread count
    (HELIOS_TEST_THREADS, see tests/conftest.py), not on every core.
    """

    def __init__(self, *args: str, wait: bool = True, timeout: float = PATIENCE, env: dict[str, str] | None = None):
        if "--threads" not in args:
            args = (*args, "--threads", str(THREADS))
        self.args = args
        self._log = tempfile.TemporaryFile(mode="w+")
        for attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._log.seek(0)
            self._log.truncate()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helios_cli", "serve", "--port", str(self.port), *args],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                text=True,
                env=None if env is None else {**os.environ, **env},
            )
            if not wait:
                return
            try:
                wait_healthy(self.url, self.process, timeout, output=self.log, poll=0.05)
                return
            except RuntimeError:
                # free_port's port is free when picked, not reserved: under pytest-xdist another
                # process may take it before this server binds it. Then pick another.
                if attempt == 2 or self.process.poll() is None or "address already in use" not in self.log():
                    raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the server has written so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def wait(self, timeout: float = PATIENCE) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> str:
        """SIGTERM, then its log; a server that ignores it is killed (its returncode then says so)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()


class SharedServers:
    """One server per set of flags, started at its first request and stopped by `close()`.

    Modules whose tests take the same flags share a process instead of paying a
    start each (~2 s). Their tests must then not depend on a fresh server:
    counters are read as deltas, prompts are unique to their test.
    """

    def __init__(self) -> None:
        self._started: dict[tuple[str, ...], ServerProcess] = {}

    def get(self, *args: str) -> ServerProcess:
        server = self._started.get(args)
        if server is None or server.process.poll() is not None:
            server = self._started[args] = ServerProcess(*args)
        return server

    def close(self) -> None:
        for server in self._started.values():
            server.__exit__(None, None, None)
        self._started.clear()


@functools.cache
def no_eog() -> dict[str, float]:
    """A request's logit_bias that suppresses every end-of-generation token of the default model.

    For generations that must run as long as max_tokens says (Gemma 3: eos 1,
    <end_of_turn> 106, and 212, which llama.cpp also treats as one).
    """
    with Model(default_model_path(), vocab_only=True) as model:
        return {str(token): bias for token, bias in eog_bias(model.vocab).items()}


def metric(url: str, name: str, labels: str = "") -> float:
    """A sample of /metrics, e.g. metric(url, "requests_total", '{path="/health",status="200"}'); 0 when absent."""
    wanted = f"helios_{name}{labels} "
    for line in httpx.get(f"{url}/metrics", timeout=PATIENCE).text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll until `condition()` holds; fail after `timeout` seconds (a failure bound, not an expectation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")
