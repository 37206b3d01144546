"""Engine: a Scheduler on its own thread, the only thread that touches the llama context.

Other threads submit requests and receive events through callbacks, so nothing here knows
about asyncio or HTTP.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

from helios_core.context import Context
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.engine.request import (
    Done,
    EngineShutdownError,
    Event,
    Generation,
    QueueFullError,
    Request,
    Sink,
    deliver,
)
from helios_core.engine.runner import Runner
from helios_core.engine.scheduler import PREFILL_PER_STEP, Scheduler
from helios_core.errors import HeliosError
from helios_core.media_prompt import MediaPrompt
from helios_core.prompt_cache import PromptCache
from helios_core.sequence import GenerationParams
from helios_core.speculative import Speculation
from helios_core.worker import Worker

logger = logging.getLogger("helios.engine")


class Engine(Worker):
    """A Scheduler on its own thread (a Worker). submit() from any thread; events arrive on the request's sink.

    Shutting down, in order: stop_accepting() refuses new work and ends the
    waiting requests; wait_idle(grace) lets the running ones finish; close()
    ends whatever still runs and stops the thread. The engine never frees its
    context: its owner does, after close().
    """

    def __init__(
        self,
        ctx: Context | Runner,
        *,
        max_queue: int = 64,
        prefill_per_step: int = PREFILL_PER_STEP,
        n_ctx_per_seq: int | None = None,
        speculation: Speculation | None = None,
        prompt_cache: PromptCache | None = None,
        backend_sampling: bool | None = None,
    ):
        """ctx: the context to run on (a LlamaRunner is made over it, holding `prompt_cache`), or a Runner."""
        super().__init__("helios-engine")
        runner = LlamaRunner(ctx, prompt_cache=prompt_cache) if isinstance(ctx, Context) else ctx
        self.prompt_cache = getattr(runner, "prompt_cache", None)  # the RAM tier, for its metrics
        self.scheduler = Scheduler(
            runner,
            prefill_per_step=prefill_per_step,
            n_ctx_per_seq=n_ctx_per_seq,
            on_dequeue=self._dequeued,
            speculation=speculation,
            backend_sampling=backend_sampling,
        )
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when the engine may have gone idle
        self._queued = 0  # submitted, not yet admitted to a slot (or ended while waiting)
        self._idle = True  # nothing queued, nothing running
        self._accepting = True
        self._step_listeners: list[Callable[[], None]] = []
        self.start()

    def add_step_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` on the engine thread after every step (and once at shutdown).

        Sinks called during a step may hold its events and hand them on in one batch there.
        """
        self._step_listeners.append(listener)

    @property
    def n_ctx_per_seq(self) -> int:
        return self.scheduler.n_ctx_per_seq

    @property
    def queued(self) -> int:
        """Requests waiting for a slot (not those running)."""
        return self._queued

    @property
    def busy_slots(self) -> int:
        return self.scheduler.busy_slots

    @property
    def n_slots(self) -> int:
        return len(self.scheduler.slots)

    def submit(self, prompt: Sequence[int], params: GenerationParams, sink: Sink) -> Request:
        """Queue a request. Raises PromptTooLongError, QueueFullError or EngineShutdownError at once, never later."""
        media = prompt if isinstance(prompt, MediaPrompt) else None
        prompt = list(prompt)
        self.scheduler.check_prompt(prompt)  # reads only immutable settings: safe from any thread
        request = Request(prompt, params, sink, media=media)
        with self._lock:
            if not self._accepting:
                raise EngineShutdownError("the server is shutting down and takes no new requests")
            if self._queued >= self.max_queue:
                raise QueueFullError(f"{self._queued} requests are already waiting (the limit is {self.max_queue})")
            self._queued += 1
            self._idle = False
            self.put(request)
        return request

    def call(self, fn: Callable[[Scheduler], object]) -> Future:
        """Run fn(scheduler) on the engine thread, between steps: for work on the context (slot files).

        The Future gets its result or exception; EngineShutdownError if the engine stops first.
        """
        future: Future = Future()
        with self._lock:
            if self._stopping:
                raise EngineShutdownError("the server is shutting down")
            self.put((fn, future))
        return future

    def generate(self, prompt: str | Sequence[int], params: GenerationParams | None = None) -> Generation:
        """Submit a request and return its Generation, to iterate from the calling thread.

        Strings are tokenized with BOS. Submit many before iterating any and they
        run together, batched by the engine thread; raises like submit().
        """
        if isinstance(prompt, str):
            prompt = self.scheduler.model.vocab.tokenize(prompt)
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        request = self.submit(prompt, params or GenerationParams(), events.put)
        return Generation(_until_done(events, request), request)

    def stop_accepting(self) -> None:
        """Refuse new requests from now on, and end those still waiting for a slot (EngineShutdownError)."""
        with self._lock:
            self._accepting = False
        self.put(_FAIL_WAITING)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._idle, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """End whatever still runs or waits (EngineShutdownError) and stop the thread. Safe to call twice.

        If a step outlasts `timeout` seconds the thread is left to finish it;
        the context stays usable by it, since the engine never frees it.
        """
        with self._lock:
            self._accepting = False
            self._stopping = True  # call() refuses from now on
        if not self.stop(timeout):
            logger.warning("the engine thread did not stop within %g s; it ends after its current step", timeout)

    # --- the engine thread ---------------------------------------------------------

    def has_work(self) -> bool:
        return self.scheduler.has_work

    def take(self, item: Request | str | tuple) -> None:
        if item is _FAIL_WAITING:
            self.scheduler.fail_waiting(
                EngineShutdownError("the server is shutting down; the request was still waiting for a slot")
            )
        elif isinstance(item, tuple):  # call()
            _run_call(self.scheduler, *item)
        else:
            self._take(item)

    def work(self) -> None:
        try:
            self.scheduler.step()
        except Exception as error:  # a bug must not take the engine thread (and every later request) down
            logger.exception("engine step failed; ending the requests in flight")
            self.scheduler.fail_all(HeliosError(f"internal engine error: {error}"))
        self._note_idle()
        self._after_step()

    def finish(self, leftovers: list) -> None:
        scheduler = self.scheduler
        shutdown = EngineShutdownError("the server is shutting down; the request was not finished")
        scheduler.fail_all(shutdown)
        for item in leftovers:  # submitted but never taken from the inbox
            if isinstance(item, Request):
                self._dequeued(item)
                deliver(item, Done(None, shutdown))
            elif isinstance(item, tuple):
                item[1].set_exception(shutdown)
        scheduler.fail_waiting(shutdown)
        self._note_idle()
        self._after_step()

    def _after_step(self) -> None:
        for listener in self._step_listeners:
            try:
                listener()
            except Exception:  # a listener's failure must not take the engine thread down
                logger.exception("a step listener failed")

    def _take(self, request: Request) -> None:
        try:
            self.scheduler.submit(request)
        except Exception as error:  # validated in submit(); kept so one bad request never kills the thread
            self._dequeued(request)
            deliver(request, Done(None, error))

    def _dequeued(self, request: Request) -> None:
        with self._lock:
            self._queued -= 1

    def _note_idle(self) -> None:
        with self._changed:
            self._idle = self._queued == 0 and not self.scheduler.has_work
            if self._idle:
                self._changed.notify_all()


def _until_done(events: queue.SimpleQueue[Event], request: Request) -> Iterator[Event]:
    try:
        while True:
            event = events.get()
            yield event
            if isinstance(event, Done):
                return
    finally:
        request.cancel()  # the caller stopped early (or the request ended: then a no-op)


def _run_call(scheduler: Scheduler, fn: Callable[[Scheduler], object], future: Future) -> None:
    try:
        future.set_result(fn(scheduler))
    except Exception as error:  # the caller's to handle, not the engine thread's
        future.set_exception(error)


# A control message on the engine's inbox: end the requests waiting for a slot.
_FAIL_WAITING = "fail-waiting"
