"""Past one machine: llama.cpp's RPC backend, from both ends.

A *worker* serves its machine's backend (the CPU, or its GPUs) to others:
`serve_worker("127.0.0.1", 50052, n_threads=4)` runs ggml's own RPC server in
this process, over the libraries helios already loaded, until the process ends.
A *client* registers workers before it loads a model: `add_workers(["host:port",
...])` makes each worker's devices ggml devices like a local GPU, and a Model
loaded with n_gpu_layers then places layers on them (split by their free
memory, or by `tensor_split`), as `llama-server --rpc` does.

RPC has no authentication and no encryption: a worker must only be reachable
from machines that may run code on it. ggml aborts the process when a worker
stops answering mid-decode; programs catch that with backend.exit_on_abort().
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from helios_core import _ggml
from helios_core.backend import ensure_initialized
from helios_core.errors import BackendError

DEFAULT_PORT = 50052
# How long a worker gets to accept a connection before it counts as unreachable.
CONNECT_SECONDS = 5.0

_added: dict[str, int] = {}  # endpoint -> its registry handle, so a worker is registered once per process
_lock = threading.Lock()


def parse_endpoints(text: str) -> list[str]:
    """ "host:port,host:port" (as llama.cpp's --rpc takes it) -> the endpoints; BackendError if one is malformed."""
    endpoints = [part.strip() for part in text.split(",") if part.strip()]
    if not endpoints:
        raise BackendError("--rpc needs at least one worker as host:port")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BackendError(f"RPC worker {endpoint!r} is not host:port")
    return endpoints


def check_reachable(endpoint: str, timeout: float = CONNECT_SECONDS) -> None:
    """Raise BackendError naming the worker if it does not accept a TCP connection within `timeout`.

    ggml itself aborts the whole process on a worker it cannot reach; asking first
    turns that into one line at start-up.
    """
    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise BackendError(f"RPC worker {endpoint} is unreachable: {reason}") from None


def add_workers(endpoints: Sequence[str]) -> None:
    """Register each worker's devices with ggml, once per endpoint; load models after this.

    Raises BackendError for a worker that cannot be reached, or a build without the RPC backend.
    """
    ensure_initialized()
    add_server = _ggml.rpc_proc("ggml_backend_rpc_add_server")
    if add_server is None:
        raise BackendError("this build of llama.cpp has no RPC backend; rebuild with `make build`")
    with _lock:
        for endpoint in endpoints:
            if endpoint in _added:
                continue
            check_reachable(endpoint)
            registry = add_server(endpoint.encode())
            if not registry:
                raise BackendError(f"RPC worker {endpoint} refused the connection's handshake")
            _ggml.ggml_backend_register(registry)
            _added[endpoint] = registry


def serve_worker(host: str, port: int, *, n_threads: int, cache_dir: str | Path | None = None) -> None:
    """Serve this machine's devices to RPC clients on host:port; blocks for the life of the process.

    The devices are the GPUs when there are any, else the CPU with n_threads threads (as
    llama.cpp's rpc-server chooses). cache_dir: where the worker keeps tensors clients
    sent before, so a restarted client's large tensors load from local disk.
    """
    ensure_initialized()
    start_server = _ggml.rpc_proc("ggml_backend_rpc_start_server")
    if start_server is None:
        raise BackendError("this build of llama.cpp has no RPC backend; rebuild with `make build`")
    devices = [_ggml.ggml_backend_dev_get(i) for i in range(_ggml.ggml_backend_dev_count())]
    gpus = [d for d in devices if _is_local_gpu(d)]
    chosen = gpus or [_ggml.ggml_backend_dev_by_type(_ggml.GGML_BACKEND_DEVICE_TYPE_CPU)]
    array = (_ggml.ggml_backend_dev_t * len(chosen))(*chosen)
    cache = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache = str(cache_dir).encode()
    start_server(f"{host}:{port}".encode(), cache, n_threads, len(chosen), array)


def _is_local_gpu(device) -> bool:
    # A worker never re-serves devices that are themselves another worker's.
    kind = _ggml.ggml_backend_dev_type(device)
    registry = _ggml.ggml_backend_dev_backend_reg(device)
    return kind in (_ggml.GGML_BACKEND_DEVICE_TYPE_GPU, _ggml.GGML_BACKEND_DEVICE_TYPE_IGPU) and (
        _ggml.ggml_backend_reg_name(registry) != b"RPC"
    )
