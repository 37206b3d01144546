"""Run `helios-engine serve` as a real process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx


def wait_healthy(url: str, process: subprocess.Popen, timeout: float, output: Callable[[], str] | None = None) -> None:
    """Poll GET /health until it answers 200; raise if the process exits or time runs out.

    output: what the process wrote, for the error (default: read its stdout).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            written = output() if output else process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"server exited early with {process.returncode}:\n{written}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server at {url} did not become healthy in {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`helios-engine serve ARGS` on a free port, healthy once constructed; `stop()` returns its log.

    env: variables to set for the server beside the inherited ones.

    Unless ARGS name --threads, the engine runs on the suite's thread count
    (HELIOS_TEST_THREADS, see tests/conftest.py), not on every core.
    """

    def __init__(self, *args: str, timeout: float = 300.0, env: dict[str, str] | None = None):
        from tests.conftest import THREADS  # imported here: benchmarks use this module's helpers without pytest

        if "--threads" not in args:
            args = (*args, "--threads", str(THREADS))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "helios_cli", "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        # The server logs every request. Read its output as it comes: once a pipe nobody
        # reads is full (64 KiB), the server's next log line blocks it, and every request with it.
        self._reader = threading.Thread(target=self._read_output, name="server-log", daemon=True)
        self._reader.start()
        wait_healthy(self.url, self.process, timeout, output=self._output)

    def _read_output(self) -> None:
        for line in self.process.stdout:
            self.log.append(line)

    def _output(self) -> str:
        self._reader.join(timeout=10)  # the process has ended: its pipe reaches EOF
        return "".join(self.log)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self._output()
