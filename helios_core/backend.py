"""Process-wide llama.cpp set-up: backend init, and its logging routed into Python.

llama.cpp logs through one global callback. We route it into the
`helios.llama` logger, which has a NullHandler, so nothing is printed unless
the application configures logging (e.g. `logging.basicConfig(level=INFO)`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from helios_core import _llama

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


def ensure_initialized() -> None:
    """Install the log bridge and initialise llama.cpp's backends, once per process."""
    global _initialized
    with _init_lock:
        if _initialized:
            return
        _llama.llama_log_set(_callback, None)
        _llama.llama_backend_init()
        _initialized = True


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


def system_info() -> str:
    """llama.cpp's own summary of the CPU features and backends it was built with."""
    ensure_initialized()
    return _llama.llama_print_system_info().decode()


def supports_gpu_offload() -> bool:
    ensure_initialized()
    return bool(_llama.llama_supports_gpu_offload())
