"""Runtime: the owner of what one served model holds in C, closed in the reverse order of opening.

A server or a `generate` run opens a model, a context on it, maybe a draft model and its
context, an embedding worker, and the engine that decodes in the context. Each must be freed
after everything that uses it: the engine stopped before its context is freed, a context freed
before its model. `Runtime.own` registers each object as it is opened, and `close` frees them
last-opened first, as an ExitStack does, so the order of opening is the only order to get right.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger("helios.runtime")


class Runtime:
    """Owns objects with a close(); closes them last-opened first. Usable as a context manager.

    Closing twice is a no-op. An object whose close() raises is logged, and the ones
    opened before it still close: one failure must not leak the model under it.
    """

    def __init__(self) -> None:
        self._closers: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def own(self, thing: T, close: Callable[[], None] | None = None) -> T:
        """Register `thing` (its close(), or `close`) to be closed with the runtime; returns `thing`."""
        with self._lock:
            self._closers.append((type(thing).__name__, close or thing.close))
        return thing

    def close(self) -> None:
        while True:
            with self._lock:
                if not self._closers:
                    return
                name, close = self._closers.pop()
            try:
                close()
            except Exception:
                logger.exception("closing the %s failed; closing the rest", name)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
