"""Generation on one sequence of a context: the N = 1 case of the scheduler.

`Generator` drives a one-slot Scheduler (engine.py) synchronously: the same
admission, prefix reuse, batching and sampling code the server runs with
many slots, iterated in the caller's thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from helios_core.context import Context
from helios_core.engine import Done, Event, Generation, Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.errors import ClosedError
from helios_core.kvcache import CachedSequence
from helios_core.media_prompt import MediaPrompt
from helios_core.model import Model
from helios_core.sequence import GenerationParams, Step, Timings, Usage
from helios_core.speculative import Speculation

__all__ = ["Generation", "GenerationParams", "Generator", "Step", "Timings", "Usage"]


class Generator:
    """Generates on one sequence of a context, reusing the KV cache across calls.

    A new prompt that shares a prefix with the previous prompt-plus-completion
    decodes only the rest: a follow-up chat turn costs the new turn.

    Without `ctx` the generator makes its own context and close() (or the
    end of a `with` block) frees it; a context passed in stays the caller's.
    speculation: speculative decoding (helios_core.speculative.Speculation), off by default.
    backend_sampling: draw top-k chains (and greedy, with the logits on a GPU) in the compute graph
        (helios_core.sampling.backend; None: so, unless HELIOS_BACKEND_SAMPLING=0; True: greedy too, anywhere).
    """

    def __init__(
        self,
        model: Model,
        ctx: Context | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        speculation: Speculation | None = None,
        backend_sampling: bool | None = None,
    ):
        self.model = model
        self._owns_ctx = ctx is None
        self.ctx = ctx or Context(model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads)
        self.scheduler = Scheduler(LlamaRunner(self.ctx), speculation=speculation, backend_sampling=backend_sampling)
        self._closed = False

    def close(self) -> None:
        """Stop accepting prompts and free the context this generator made. Safe to call twice."""
        self._closed = True
        if self._owns_ctx:
            self.ctx.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def cache(self) -> CachedSequence:
        """What sequence 0 of the context holds."""
        return self.scheduler.slots[0].cache

    def generate(self, prompt: str | Sequence[int], params: GenerationParams | None = None) -> Generation:
        """Start generating. Strings are tokenized with BOS and without special-token parsing."""
        if self._closed:
            raise ClosedError("generator is closed")
        params = params or GenerationParams()
        tokens = self.model.vocab.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        events: deque = deque()
        media = prompt if isinstance(prompt, MediaPrompt) else None  # images and audio: media_step reads them
        request = Request(tokens, params, events.append, media=media)
        self.scheduler.submit(request)  # raises PromptTooLongError at once
        return Generation(self._run(request, events), request)

    def _run(self, request: Request, events: deque) -> Iterator[Event]:
        done = False
        try:
            while True:
                if not events:
                    self.scheduler.step()
                    continue
                event = events.popleft()
                yield event
                if isinstance(event, Done):
                    done = True
                    return
        finally:
            if not done:  # the caller stopped early: free the slot for the next call
                request.cancel()
                self.scheduler.step()
