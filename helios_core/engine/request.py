"""A request as the engine sees it, the events it receives, and how it ends: errors, Done, Generation."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from helios_core.errors import HeliosError
from helios_core.media_prompt import MediaPrompt
from helios_core.sampling.backend import BackendChain
from helios_core.scoring import Scored
from helios_core.sequence import GenerationParams, SequenceState, Step, Timings, Usage


class QueueFullError(HeliosError):
    """The engine's waiting queue is full; retry later."""


class EngineShutdownError(HeliosError):
    """The engine is shutting down: the request was refused, or ended before it finished."""


class PromptTooLongError(HeliosError, ValueError):
    """A prompt does not fit one slot's context."""

    def __init__(self, n_prompt: int, n_ctx: int):
        super().__init__(
            f"the prompt has {n_prompt} tokens, but the context holds {n_ctx} per sequence "
            f"(and generation needs at least one more)"
        )
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx


@dataclass
class Done:
    """The last event of a request: why it ended (or the error that ended it), and its accounts."""

    finish_reason: str | None
    error: Exception | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    stop: str | None = None  # the stop string that ended it; None after an end-of-generation token or a limit


Event = Step | Scored | Done
Sink = Callable[[Event], None]

_ids = itertools.count()
logger = logging.getLogger("helios.engine")


@dataclass
class Request:
    """One generation request as the scheduler sees it. `sink` receives Steps, then one Done."""

    prompt: list[int]
    params: GenerationParams
    sink: Sink
    id: int = field(default_factory=lambda: next(_ids))
    seq: SequenceState | None = None
    timings: Timings = field(default_factory=Timings)
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    first_token_at: float = 0.0
    speculates: bool = False  # drafts are verified for it (set when submitted)
    media: MediaPrompt | None = None  # the prompt's media chunks, when it has any (media_step reads them)
    backend: BackendChain | None = None  # its chain runs in the compute graph (sampling/backend.py)

    @property
    def usage(self):
        return self.seq.usage

    def cancel(self) -> None:
        """Ask the scheduler to stop this request; safe from any thread."""
        self.cancelled = True


class Generation:
    """One request's Steps, as an iterator; then its finish_reason, usage, timings and prompt_logprobs.

    Iterate it from one thread. Leaving the iteration early cancels the request.
    An error that ended the request is raised by the iteration.
    """

    def __init__(self, events: Iterator[Event], request: Request):
        self._events = events
        self.request = request
        self.finish_reason: str | None = None
        self.prompt_logprobs: Scored | None = None  # when GenerationParams.prompt_logprobs asked for them

    def __iter__(self) -> Iterator[Step]:
        return self

    def __next__(self) -> Step:
        for event in self._events:
            if isinstance(event, Step):
                return event
            if isinstance(event, Scored):
                self.prompt_logprobs = event
            elif isinstance(event, Done):
                self.finish_reason = event.finish_reason
                if event.error is not None:
                    raise event.error
        raise StopIteration

    @property
    def sequence(self) -> SequenceState:
        """The request's state (tokens, sampler, ...): the engine's to change until the request ends."""
        return self.request.seq

    @property
    def usage(self) -> Usage:
        return self.request.seq.usage if self.request.seq is not None else Usage()

    @property
    def timings(self) -> Timings:
        return self.request.timings

    def text(self) -> str:
        """Run to the end and return the whole completion."""
        return "".join(step.text for step in self)

    def cancel(self) -> None:
        self.request.cancel()


def deliver(request: Request, event: Event) -> None:
    """Hand an event to a request's sink; a sink that fails loses its request's events, nothing more."""
    try:
        request.sink(event)
    except Exception:
        logger.exception("the sink of request %d failed; its events are dropped", request.id)
        request.cancelled = True
