"""Worker: a thread of its own, fed through an inbox, the only thread that touches what it owns.

The engine (engine/worker.py: Engine, a Scheduler over a llama context) and the embedding
worker (embedding_worker.py: EmbeddingWorker, an embeddings context) are both one: other threads
put items into the inbox; the thread takes in everything that has arrived, does one piece of
work, and blocks on the inbox only when it has none. Stopping puts a mark in the inbox; the
thread ends after the piece of work in hand, and hands what was left in the inbox to finish().
"""

from __future__ import annotations

import queue
import threading


class Worker:
    """The loop of a worker thread. Subclasses say what an item is and what a piece of work is.

    put() from any thread; the thread starts at start() and ends at stop().
    """

    def __init__(self, name: str):
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._name = name
        self._thread: threading.Thread | None = None
        self._stopping = False  # set by stop(); subclasses may read it (under their own lock)

    @property
    def thread_id(self) -> int | None:
        """The worker thread's identifier (None before start()): code called on it runs inside the loop."""
        return self._thread.ident if self._thread is not None else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def put(self, item: object) -> None:
        """Hand the thread an item; it takes it in before its next piece of work."""
        self._inbox.put(item)

    def stop(self, timeout: float | None = None) -> bool:
        """End the thread after its piece of work in hand; False if it still runs after `timeout` seconds."""
        self._stopping = True
        self._inbox.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # --- what a subclass says (all called on the worker thread) ------------------------------------

    def has_work(self) -> bool:
        """Whether a piece of work waits; the thread blocks on the inbox while there is none."""
        raise NotImplementedError

    def take(self, item: object) -> None:
        """Take in one item from the inbox."""
        raise NotImplementedError

    def work(self) -> None:
        """Do one piece of work (an engine step, a decode); it must not raise."""
        raise NotImplementedError

    def finish(self, leftovers: list) -> None:
        """The thread's last act: end what runs, and the items put but never taken."""
        raise NotImplementedError

    # --- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            # Block when idle; otherwise take whatever arrived since the last piece of work.
            block = not self.has_work()
            while True:
                try:
                    item = self._inbox.get(block=block)
                except queue.Empty:
                    break
                block = False
                if item is _STOP:
                    break
                self.take(item)
            if self._stopping:
                break
            self.work()
        leftovers = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)
        self.finish(leftovers)


_STOP = object()  # the mark stop() puts in the inbox
