"""EmbeddingWorker: an Embedder (embeddings.py) on a thread of its own, for a server.

It makes the context at its first job, and packs the inputs of every job waiting
into each decode, so concurrent requests share decodes as one request's inputs do.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from helios_core.embeddings import (
    DEFAULT_BATCH,
    DEFAULT_SEQUENCES,
    MAX_SEQUENCES,
    Embedder,
    Input,
    checked_pooling,
    embedding_size,
    input_tokens,
)
from helios_core.errors import HeliosError
from helios_core.model import Model
from helios_core.worker import Worker

logger = logging.getLogger("helios.embeddings")


class EmbeddingJob:
    """Inputs submitted together to an EmbeddingWorker; `vectors` (n, n_embd) once done, or `error`."""

    def __init__(self, token_lists: Sequence[np.ndarray], n_embd: int, on_done: Callable[[EmbeddingJob], None]):
        self.token_lists = token_lists
        self.vectors = np.empty((len(token_lists), n_embd), dtype=np.float32)
        self.error: Exception | None = None
        self.done = False
        self.cancelled = False
        self._left = len(token_lists)
        self._next = 0  # the first input not yet handed to a decode
        self._on_done = on_done

    @property
    def n_tokens(self) -> int:
        return sum(int(t.size) for t in self.token_lists)

    def cancel(self) -> None:
        """Drop the inputs not decoded yet (a client that went away); on_done is not called after this."""
        self.cancelled = True

    def _put(self, index: int, vector: np.ndarray) -> None:
        self.vectors[index] = vector
        self._left -= 1
        if self._left == 0:
            self._finish()

    def _fail(self, error: Exception) -> None:
        self.error = error
        self._finish()

    def _finish(self) -> None:
        if not self.done and not self.cancelled:
            self.done = True
            try:
                self._on_done(self)
            except Exception:  # the worker's thread must outlive a callback that fails (a closed event loop)
                logger.exception("an embedding job's on_done callback failed")


class EmbeddingWorker(Worker):
    """An Embedder on a thread of its own (a Worker), the only thread that touches its context.

    submit() may come from any thread. The thread starts, and the context is
    made, at the first job: a server that never embeds pays nothing. Each
    decode takes inputs from every job waiting, one job's next input after
    another's in turn, so concurrent jobs share decodes and a job of 2,000
    inputs does not hold up one of a single input until it is done. A decode
    that fails fails the jobs in it, not the worker. Closing the model closes
    the context; close() also ends the thread.

    pooling, n_batch, n_seq_max, n_threads: as for Embedder.
    """

    def __init__(
        self,
        model: Model,
        *,
        pooling: str | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_seq_max: int = DEFAULT_SEQUENCES,
        n_threads: int | None = None,
    ):
        super().__init__("helios-embeddings")
        pooling = checked_pooling(model, pooling)
        if n_batch < 1 or n_seq_max < 1:
            raise ValueError(f"n_batch and n_seq_max must be positive, got {n_batch}, {n_seq_max}")
        self.model = model
        self.pooling = pooling
        self.n_batch = n_batch
        self.n_seq_max = min(n_seq_max, n_batch, MAX_SEQUENCES)  # as the Embedder's context holds
        self._settings = {"pooling": pooling, "n_batch": n_batch, "n_seq_max": n_seq_max, "n_threads": n_threads}
        self.n_embd = embedding_size(model)
        self._waiting: deque[EmbeddingJob] = deque()  # jobs with inputs not yet decoded, in turn (worker thread)
        self._lock = threading.Lock()
        self._closed = False
        self._embedder: Embedder | None = None

    def tokens(self, item: Input, index: int = 0) -> np.ndarray:
        """One input's tokens, checked by input_tokens() against n_batch (ValueError naming the input)."""
        return input_tokens(self.model, item, index, self.n_batch)

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, token_lists: Sequence[np.ndarray], on_done: Callable[[EmbeddingJob], None]) -> EmbeddingJob:
        """Queue inputs checked by tokens(); on_done(job) runs on the worker's thread when the job is done."""
        if not token_lists:
            raise ValueError("nothing to embed")
        job = EmbeddingJob(token_lists, self.n_embd, on_done)
        with self._lock:
            if self._closed:
                raise HeliosError("the embedding worker is closed")
            if self._thread is None:
                self.start()
            self.put(job)
        return job

    def close(self, timeout: float | None = None) -> None:
        """Fail the jobs still waiting, end the thread (after a decode in flight) and free the context."""
        with self._lock:
            self._closed = True
        self.stop(timeout)
        if self._embedder is not None:
            self._embedder.close()

    # --- the worker's thread -----------------------------------------------

    def has_work(self) -> bool:
        return bool(self._waiting)

    def take(self, job: EmbeddingJob) -> None:
        self._waiting.append(job)  # everything that has arrived shares the next decode

    def work(self) -> None:
        group = self._next_group(self._waiting)
        if group:
            self._decode(group)

    def finish(self, leftovers: list[EmbeddingJob]) -> None:
        for job in [*self._waiting, *leftovers]:
            job._fail(HeliosError("the embedding worker was closed"))

    def _next_group(self, waiting: deque[EmbeddingJob]) -> list[tuple[EmbeddingJob, int]]:
        """(job, input index) pairs for the next decode: the jobs' next inputs in turn, while they fit."""
        group: list[tuple[EmbeddingJob, int]] = []
        used = 0
        while waiting and len(group) < self.n_seq_max:
            job = waiting[0]
            if job.cancelled or job.done or job._next == len(job.token_lists):
                waiting.popleft()  # nothing more to hand out (a job in flight finishes in _decode)
                continue
            n = int(job.token_lists[job._next].size)
            if used + n > self.n_batch:
                break
            group.append((job, job._next))
            job._next += 1
            used += n
            waiting.rotate(-1)  # the next input comes from the next job
        return group

    def _decode(self, group: list[tuple[EmbeddingJob, int]]) -> None:
        token_lists = [job.token_lists[i] for job, i in group]
        try:
            if self._embedder is None:
                self._embedder = Embedder(self.model, **self._settings)
            vectors = self._embedder.decode(token_lists)
        except Exception as error:  # the jobs in this decode fail; the worker goes on with the next
            logger.error("embedding decode failed: %s", error)
            for job in dict.fromkeys(job for job, _ in group):
                job._fail(error)
            return
        for (job, i), vector in zip(group, vectors, strict=True):
            if not job.done:
                job._put(i, vector)
