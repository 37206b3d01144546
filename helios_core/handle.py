"""Handle: one C pointer, freed exactly once, when nothing in Python can reach it any more.

Owners (Model, Context) hold a Handle and drop it on close(). Anything that
needs the pointer to stay valid for a while holds a reference of its own: a
context holds its model's handle, a call in flight on another thread holds
the handle in a local variable, a NumPy view of llama.cpp's logits holds its
context's. So close() may come from any thread at any time and the memory
is freed only after the last reader is done, in dependency order (a
context before its model). What close() does at once is refuse new use:
owners check for their handle first and raise ClosedError.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable


class Handle:
    """A C pointer and the function that frees it; `keep_alive` objects outlive it."""

    __slots__ = ("ptr", "__weakref__")

    def __init__(self, ptr: int, free: Callable[[int], None], *keep_alive: object):
        self.ptr = ptr
        # The finalizer holds keep_alive until it has freed ptr: a context's
        # model is freed after the context, never before.
        finalizer = weakref.finalize(self, _free, free, ptr, keep_alive)
        # Not at interpreter exit: a daemon thread may still be inside llama.cpp
        # then, and the operating system reclaims the memory anyway.
        finalizer.atexit = False


def _free(free: Callable[[int], None], ptr: int, keep_alive: tuple) -> None:
    free(ptr)
