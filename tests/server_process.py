"""Run `helios-engine serve` as a real process on a free loopback port, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from benchmarks.harness import free_port, stop_process, wait_healthy
from tests.conftest import THREADS

__all__ = ["ServerProcess", "free_port", "wait_healthy"]  # the last two for the tests that import them from here


class ServerProcess:
    """`helios-engine serve ARGS` on a free port, healthy once constructed; `stop()` returns its log.

    env: variables to set for the server beside the inherited ones.

    Unless ARGS name --threads, the engine runs on the suite's thread count
    (HELIOS_TEST_THREADS, see tests/conftest.py), not on every core.
    """

    def __init__(self, *args: str, timeout: float = 300.0, env: dict[str, str] | None = None):
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
        stop_process(self.process)
        return self._output()
