"""Server processes to measure: helios-engine serve and llama-server side by side, and RPC workers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from .results import ROOT

HEALTHY_WITHIN = 180  # seconds: bounds a failure to start, never a speed claim


def start_server(
    kind: str,
    model: Path,
    threads: int,
    *,
    parallel: int | None = None,
    ctx_per_slot: int | None = None,
    extra: Sequence[str] = (),
) -> Server:
    """`helios-engine serve` (kind "helios") or llama-server ("llama-server") on a free loopback port.

    Both get the same model, threads, slots (`parallel`) and context per slot; `extra` are options
    for this kind (or ones both spell alike, e.g. --rpc HOST:PORT -ngl 99). helios runs with
    `--spec off` unless `extra` names --spec: llama-server drafts nothing unless told, and
    bench_speculative measures speculation against speculation.
    """
    port = free_port()
    if kind == "helios":
        argv = [sys.executable, "-m", "helios_cli", "serve", "--model", str(model), "--port", str(port)]
        argv += ["--threads", str(threads)]
        argv += ["--parallel", str(parallel)] if parallel else []
        argv += ["--ctx-size", str(ctx_per_slot)] if ctx_per_slot else []
        argv += [] if "--spec" in extra else ["--spec", "off"]
    elif kind == "llama-server":
        argv = [str(tool("llama-server")), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["-t", str(threads), "-tb", str(threads), "--no-webui"]
        argv += ["-np", str(parallel)] if parallel else []
        argv += ["-c", str(ctx_per_slot * (parallel or 1))] if ctx_per_slot else []
    else:
        raise ValueError(f"kind must be 'helios' or 'llama-server', not {kind!r}")
    return Server(kind, [*argv, *extra], port)


class Server:
    """One server process on `port`; waits until /health answers 200.

    helios answers 200 only once its start-up work (llguidance's and DRY's views of the
    vocabulary) is done, so nothing of it runs beside the measurements.
    """

    def __init__(self, name: str, argv: list[str], port: int):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(self.url, self.process, timeout=HEALTHY_WITHIN)

    def stop(self) -> None:
        stop_process(self.process)


def tool(name: str) -> Path:
    """One of llama.cpp's binaries (llama-server, llama-bench, llama-perplexity) from our build of it."""
    sys.path.insert(0, str(ROOT / "vendor"))
    import build as vendor_build  # vendor/build.py: imported here, so that tests import this module without it

    binary = vendor_build.tools_dir() / name
    if not binary.exists():
        sys.exit(f"{binary} is missing: run `make tools` first")
    return binary


class RpcWorkers:
    """`helios-engine rpc-worker` processes on free loopback ports (1 thread each by default, as a small host)."""

    def __init__(self, count: int, threads: int = 1):
        from helios_core import rpc
        from helios_core.errors import BackendError

        self.ports = [free_port() for _ in range(count)]
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "helios_cli", "rpc-worker", "--port", str(port), "--threads", str(threads)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in self.ports
        ]
        deadline = time.monotonic() + 60
        for endpoint in self.endpoints:
            while True:
                try:
                    rpc.check_reachable(endpoint, timeout=1)
                    break
                except BackendError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def spec(self) -> str:
        return ",".join(self.endpoints)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def wait_healthy(
    url: str, process: subprocess.Popen, timeout: float, output: Callable[[], str] | None = None, poll: float = 0.2
) -> None:
    """Poll GET /health every `poll` seconds until it answers 200; raise if the process exits or time runs out.

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
        time.sleep(poll)
    process.kill()
    raise RuntimeError(f"server at {url} did not become healthy in {timeout:.0f} s")


def stop_process(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
