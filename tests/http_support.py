"""Helpers for the tests of the server's limits, auth and lifecycle: a logged server process, raw sockets, metrics.

Every wait here is for an event (a line, a metric, a closed socket) with a
generous deadline that only bounds a failure: this machine is shared and slow.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import httpx

from helios_core.model import Model
from helios_core.resolve import default_model_path
from tests.conftest import PATIENCE, THREADS, eog_bias
from tests.server_process import free_port, wait_healthy

# A failure bound for waits on a server that is merely slow, not a performance target.


@functools.cache
def no_eog() -> dict[str, float]:
    """A request's logit_bias that suppresses every end-of-generation token of the default model.

    For generations that must run as long as max_tokens says (Gemma 3: eos 1,
    <end_of_turn> 106, and 212, which llama.cpp also treats as one).
    """
    with Model(default_model_path(), vocab_only=True) as model:
        return {str(token): bias for token, bias in eog_bias(model.vocab).items()}


class LoggedServer:
    """`helios-engine serve` in a process whose output goes to a file.

    A pipe nobody reads would fill up with the access log and stall the server.
    """

    def __init__(
        self, *args: str, wait: bool = True, threads: int = THREADS, timeout: float = PATIENCE, env: dict | None = None
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "helios_cli", "serve", "--port", str(self.port), "--threads", str(threads)]
            + list(args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        if wait:
            wait_healthy(self.url, self.process, timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def wait(self, timeout: float = PATIENCE) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM, then the exit code; a server that ignores it is killed (and the code says so)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def __enter__(self) -> LoggedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()


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
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    return sock


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
