"""Process-wide llama.cpp set-up: backend init, and its logging routed into Python.

llama.cpp logs through one global callback. We route it into the
`helios.llama` logger, which has a NullHandler, so nothing is printed unless
the application configures logging (e.g. `logging.basicConfig(level=INFO)`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from helios_core import _ggml, _llama, cpu_variant
from helios_core.errors import LibraryNotFoundError

logger = logging.getLogger("helios.llama")
logger.addHandler(logging.NullHandler())

_LEVELS = {
    _llama.GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    _llama.GGML_LOG_LEVEL_INFO: logging.INFO,
    _llama.GGML_LOG_LEVEL_WARN: logging.WARNING,
    _llama.GGML_LOG_LEVEL_ERROR: logging.ERROR,
}


class _LineLogger:
    """Joins llama.cpp's partial messages (it logs pieces and CONT records) into lines."""

    def __init__(self) -> None:
        self._pending = ""
        self._level = logging.INFO
        self._lock = threading.Lock()
        self.captured = threading.local()  # .lines: a list while errors_captured() runs on that thread

    def __call__(self, level: int, text: bytes | None, _user_data) -> None:
        piece = (text or b"").decode("utf-8", errors="replace")
        with self._lock:
            if level != _llama.GGML_LOG_LEVEL_CONT:
                self._level = _LEVELS.get(level, logging.INFO)
            self._pending += piece
            *lines, self._pending = self._pending.split("\n")
            level_now = self._level
        capture = getattr(self.captured, "lines", None)
        for line in lines:
            if not line:
                continue
            if capture is not None and level_now >= logging.ERROR:
                capture.append(line)
            else:
                logger.log(level_now, "%s", line)


_line_logger = _LineLogger()
# Kept alive for the life of the process: llama.cpp holds the raw pointer.
_callback = _llama.ggml_log_callback(_line_logger)
_init_lock = threading.Lock()
_initialized = False
_cpu_verdict: cpu_variant.Verdict | None = None


def ensure_initialized() -> None:
    """Install the log bridge and initialise llama.cpp's backends, once per process.

    A build with loadable backends (GGML_BACKEND_DL) registers none by itself: each backend
    library beside libllama is loaded here, and of the CPU variants only the one this machine
    is proved to run (cpu_variant.py).
    """
    global _initialized, _cpu_verdict
    with _init_lock:
        if _initialized:
            return
        _llama.llama_log_set(_callback, None)
        _llama.llama_backend_init()
        if _ggml.ggml_backend_dev_count() == 0:
            _cpu_verdict = _load_backends(_llama.lib_dir())
        _initialized = True


def cpu_verdict() -> cpu_variant.Verdict | None:
    """Which CPU variant was loaded and why; None for a build whose CPU backend is linked in."""
    ensure_initialized()
    return _cpu_verdict


def _load_backends(folder: Path) -> cpu_variant.Verdict | None:
    cpu_libs = {path.name for path in cpu_variant.variants(folder)}
    verdict = cpu_variant.choose(folder) if cpu_libs else None
    for path in sorted(folder.glob("libggml-*.so")):
        if path.name in cpu_libs or path.name.startswith("libggml-base"):
            continue
        _load_backend(path)  # RPC, CUDA, ...; a lone libggml-cpu.so when built without variants
    if verdict is not None:
        _load_backend(Path(verdict.path))
    return verdict


def _load_backend(path: Path) -> None:
    if not _ggml.ggml_backend_load(str(path).encode()):
        raise LibraryNotFoundError(f"ggml could not load the backend {path} (see the helios.llama log)")


@contextlib.contextmanager
def errors_captured() -> Iterator[list[str]]:
    """Collect the error lines llama.cpp logs on this thread, instead of logging them.

    For calls whose failure becomes an exception: the caller puts llama.cpp's
    reason in its message, so it is said once, where it is handled.
    """
    lines: list[str] = []
    _line_logger.captured.lines = lines
    try:
        yield lines
    finally:
        _line_logger.captured.lines = None


def version() -> str:
    """The installed helios-engine distribution's version (the CLI's --version, doctor, /props)."""
    try:
        return importlib.metadata.version("helios-engine")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def system_info() -> str:
    """llama.cpp's own summary of the CPU features and backends it was built with."""
    ensure_initialized()
    return _llama.llama_print_system_info().decode()


def supports_gpu_offload() -> bool:
    ensure_initialized()
    return bool(_llama.llama_supports_gpu_offload())


@dataclass(frozen=True)
class Device:
    """A device llama.cpp can place layers on (ggml's backend registry): CPU, GPU, or an RPC worker's."""

    name: str  # e.g. "CPU", "CUDA0", "RPC0[127.0.0.1:50052]"
    description: str
    kind: str  # "cpu", "gpu", "igpu", "accel" or "meta"
    memory_free: int  # bytes, when listed
    memory_total: int


_DEVICE_KINDS = ("cpu", "gpu", "igpu", "accel", "meta")


def devices() -> list[Device]:
    """Every registered device with its memory now (for an RPC device, a round trip to its worker).

    Call it where nothing else uses the devices at the same moment: an RPC worker's
    connection is not shared safely between threads.
    """
    ensure_initialized()
    found = []
    for index in range(_ggml.ggml_backend_dev_count()):
        device = _ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        _ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        kind = _ggml.ggml_backend_dev_type(device)
        found.append(
            Device(
                _ggml.ggml_backend_dev_name(device).decode(),
                _ggml.ggml_backend_dev_description(device).decode(),
                _DEVICE_KINDS[kind] if 0 <= kind < len(_DEVICE_KINDS) else str(kind),
                free.value,
                total.value,
            )
        )
    return found


# Kept alive for the life of the process: ggml holds the raw pointer.
_abort_hook = None


def exit_on_abort(before_exit: Callable[[str], None] | None = None, *, prog: str = "helios-engine") -> None:
    """Make llama.cpp's fatal errors (GGML_ABORT: a lost RPC worker, a device failure) end the process cleanly.

    Instead of a backtrace and SIGABRT, print one line naming llama.cpp's reason, call
    `before_exit(reason)` (a server ends its requests in flight there), and exit with
    status 1, so a supervisor restarts the process. ggml aborts from whatever thread
    failed, usually inside a decode; that thread never returns to its caller. For
    programs, not libraries: a library's caller may want the default.
    """
    global _abort_hook

    def on_abort(message: bytes | None) -> None:
        # ggml prefixes its source file and line: "ggml-rpc.cpp:35: Remote RPC server crashed ..."
        reason = re.sub(r"^\S+:\d+: ", "", (message or b"").decode("utf-8", errors="replace").strip())
        try:
            sys.stderr.write(f"{prog}: llama.cpp stopped: {reason}\n")
            sys.stderr.flush()
            if before_exit is not None:
                before_exit(reason)
        finally:
            os._exit(1)

    ensure_initialized()
    _abort_hook = _ggml.ggml_abort_callback_t(on_abort)
    _ggml.ggml_set_abort_callback(_abort_hook)
