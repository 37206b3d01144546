"""The scheduler: many sequences, one decode per step, prefix-matched slots.

N slots are N llama sequences in one context. Each `Scheduler.step()` is
a plan, one `llama_decode`, and a commit:

- `plan()` says what each slot puts into the step's batch: a `Chunk` of its
  last token (generating), of its last token plus drafted ones (verifying a
  speculative draft, helios_core.speculative), or of its prompt (reading).
- `commit(plan)` takes the logits rows back: each slot samples (or verifies
  its draft) with its own SequenceState, and the slot's cache, positions and
  KV memory follow what was kept.

Nothing between the two touches the model but the decode, so the scheduler
runs on scripted logits in tests. A single request
(helios_core.generate.Generator) is the N = 1 case of this code.

`Engine` runs a Scheduler on its own thread, the only thread that touches
the llama context; other threads submit requests and receive events
through callbacks, so nothing here knows about asyncio or HTTP.

Rules:
- Admission is in arrival order into the free slot whose cached tokens
  share the longest prefix with the prompt (at least 10% of both the prompt
  and the cache; otherwise the emptiest free slot); only the rest is decoded.
- A slot keeps its tokens when its request ends, for the next prefix match.
- Prompt reading is bounded per step (`prefill_per_step` tokens while any
  slot is generating; PREFILL_PER_STEP by default), so running streams keep
  flowing during a long prompt.
- A request that scores its prompt (prompt_logprobs) reads it whole in the
  emptiest free slot, with logits for every row (at most ROWS_PER_DECODE per
  step across such slots, to bound llama.cpp's output buffer); the rows are
  reduced to logprobs as each step returns, and one `Scored` event precedes
  its first Step. max_tokens=0 ends a request once its prompt is read.
- A slow consumer never stalls the others: events are handed to the
  request's sink at once and buffered there (at most max_tokens of them).
- Cancelling a request frees its slot before the next step.
- LoRA adapters (GenerationParams.lora) are set per context in llama.cpp, so a
  step plans and decodes the slots of each adapter set in use apart: one
  decode per set, the context's current set first (one switch fewer per
  step); requests sharing a set still batch together. A slot's cached tokens
  are keyed by the set they were read under, and never reused under another.
- Speculative decoding (a `Speculation` given): a generating slot whose
  request allows it and whose sampler exposes its distribution offers its
  drafter's guess; the step verifies the drafted tokens that give the most
  expected tokens per cost of the step (speculative.allocate; at most
  `draft_budget` over all slots), none where drafts do not pay; refused
  drafted positions are removed from the KV memory before the next step,
  so the slot's cached tokens stay exactly what the memory holds.
- The masks of every constrained slot that samples in a step are computed
  together before any slot's processors run, with the GIL released
  (constraint.compute_masks: in parallel on llguidance's thread pool where
  the machine has the CPUs for one); each ConstraintProcessor then finds
  its mask ready.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from helios_core import lora, media_step
from helios_core.batch import Batch
from helios_core.constraint import ConstraintProcessor, compute_masks
from helios_core.context import Context
from helios_core.errors import HeliosError
from helios_core.kvcache import CachedSequence
from helios_core.media_prompt import MediaPrompt
from helios_core.prompt_cache import PromptCache
from helios_core.sampling import greedy
from helios_core.sampling.backend import BackendChain, BackendSampler, chain_for, enabled_by_default
from helios_core.scoring import ROWS_PER_DECODE, Scored
from helios_core.sequence import GenerationParams, SequenceState, Step, Timings, Usage
from helios_core.speculative import EMPTY, Drafter, Offer, SlotAcceptance, Speculation, allocate, can_verify, verify


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

# Prompt tokens read per step while other slots generate. Larger chunks stall the running
# streams longer (a 512-token chunk is about 0.7 s on 2 cores), smaller ones leave a slot out of
# the generating batch for more steps, and on a CPU a batch of 3 rows costs about what one of 4
# does (StepCost). 128 gave 88-94 tok/s against 112 for 512 on bench_speculative's copy workload
# with 4 clients (300-token prompts, --spec off); llama-server reads a whole prompt in one step.
PREFILL_PER_STEP = 512


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


@dataclass
class Slot:
    cache: CachedSequence
    request: Request | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to decode
    next_pos: int = 0
    drafter: Drafter | None = None  # with speculation: this slot's drafter, and its request's record of drafts
    acceptance: SlotAcceptance | None = None
    sampler: BackendSampler | None = None  # its request's backend chain, set on its sequence while it runs

    @property
    def busy(self) -> bool:
        return self.request is not None


@dataclass
class Chunk:
    """What one slot puts into a step's batch, and what its rows are for.

    rows: its tokens' rows in the batch; pos: the position of the first.
    prompt: prompt tokens in it (a prompt chunk), else 0.
    samples: the last row's logits choose the slot's next token.
    draft: a verify chunk's drafted tokens (the tokens after the slot's last one);
        every row of such a chunk has logits, row i judging draft[i].
    scored: prompt scoring, (first output row, rows, position of the first row's token).
    """

    slot: Slot
    rows: slice
    pos: int
    prompt: int = 0
    samples: bool = False
    draft: np.ndarray = field(default_factory=lambda: EMPTY)
    draft_key: tuple = ()  # the acceptance bucket the draft's verdict is recorded under
    scored: tuple[int, int, int] | None = None

    @property
    def last_row(self) -> int:
        return self.rows.stop - 1


@dataclass
class Plan:
    """One step: the chunks of the batch, in batch order."""

    chunks: list[Chunk] = field(default_factory=list)
    lora: tuple = ()  # the adapter set (lora.AdapterSet) of every chunk's request: the batch is decoded under it


@dataclass
class SchedulerStats:
    steps: int = 0
    batch_tokens: int = 0  # summed over steps: mean batch size = batch_tokens / steps
    batch_sequences: int = 0  # sequences per step, summed likewise
    busy_seconds: float = 0.0  # wall time spent in steps that decoded
    prompt_tokens_decoded: int = 0
    generated_tokens: int = 0
    reasoning_tokens: int = 0  # of the generated tokens, those of finished requests' reasoning sections
    cache_hits: int = 0  # requests that found part of their prompt cached
    cached_tokens: int = 0
    draft_tokens: int = 0  # speculative decoding: tokens drafted, and how many of them were kept
    draft_accepted: int = 0
    mask_seconds: float = 0.0  # wall time computing constrained slots' masks ahead of their processors


class Scheduler:
    """Slots over one context. Not thread-safe: one thread calls submit/step."""

    def __init__(
        self,
        ctx: Context,
        *,
        prefill_per_step: int = PREFILL_PER_STEP,
        n_ctx_per_seq: int | None = None,
        on_dequeue: Callable[[Request], None] | None = None,
        speculation: Speculation | None = None,
        prompt_cache: PromptCache | None = None,
        backend_sampling: bool | None = None,
    ):
        """on_dequeue: called (on this thread) as each request leaves the waiting queue, admitted or not.

        speculation: draft and verify tokens for the requests that allow it (None: never).
        prompt_cache: the RAM tier a slot's prefix is saved to before the slot is reused, and
            restored from at admission (helios_core.prompt_cache; None: slots only).
        backend_sampling: run the built-in chains that are exact there in the compute graph
            (sampling/backend.py). None: where it pays (top-k chains; greedy only with the logits
            on a GPU), unless HELIOS_BACKEND_SAMPLING=0; True: every such chain; False: none.
        """
        self.ctx = ctx
        self.prompt_cache = prompt_cache
        self.on_dequeue = on_dequeue
        self.model = ctx.model
        self.speculation = speculation
        self.slots = [Slot(CachedSequence(i)) for i in range(ctx.n_seq_max)]
        if speculation is not None:
            for slot in self.slots:
                slot.drafter = speculation.drafter_for(slot.cache.seq_id)
        self.waiting: deque[Request] = deque()
        self.n_ctx_per_seq = min(n_ctx_per_seq or ctx.n_ctx_seq, ctx.n_ctx_seq)
        self.prefill_per_step = max(1, prefill_per_step)
        self.batch = Batch(ctx.n_batch)
        self.stats = SchedulerStats()
        wanted = enabled_by_default() if backend_sampling is None else backend_sampling
        self.backend_sampling = wanted and isinstance(ctx, Context)  # a scripted context has no graph to draw in
        # Greedy in the graph pays where the logits are on a GPU; on CPU threads ggml's argmax over the
        # vocabulary cost ~1 ms a token more than NumPy's (measured), so there greedy stays in Python unless
        # backend_sampling=True asks for every chain the graph draws exactly.
        self.greedy_in_graph = self.backend_sampling and (backend_sampling is True or ctx.model.gpu_output)

    # --- requests ------------------------------------------------------------

    def check_prompt(self, prompt: Sequence[int]) -> None:
        """Raise at once for a prompt no slot can take (callers on other threads use this too)."""
        if not prompt:
            raise ValueError("the prompt is empty: it needs at least one token")
        if len(prompt) >= self.n_ctx_per_seq:
            raise PromptTooLongError(len(prompt), self.n_ctx_per_seq)

    def submit(self, request: Request) -> None:
        self.check_prompt(request.prompt)
        media = request.media
        if media is not None and request.params.prompt_logprobs is not None:
            raise ValueError("prompt_logprobs cannot score a prompt with media in it")
        prompt = request.prompt if media is None else media.sampling_prompt()
        request.seq = SequenceState(self.model, prompt, request.params, self.n_ctx_per_seq)
        params = request.params
        request.speculates = (
            self.speculation is not None
            and params.speculative
            and params.constraint is None
            and params.batch_sampler is None
            and can_verify(request.seq.sampler)
        )
        if self.backend_sampling and not request.speculates:
            chain = chain_for(params, request.seq.sampler, request.seq.processors)
            request.backend = None if chain is not None and chain.is_greedy and not self.greedy_in_graph else chain
        self.waiting.append(request)

    @property
    def busy_slots(self) -> int:
        return sum(slot.busy for slot in self.slots)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting) or any(slot.busy for slot in self.slots)

    # --- one step --------------------------------------------------------------

    def step(self) -> None:
        """Admit; then for each adapter set in use: plan one batch, decode it once, commit what every slot got."""
        self._drop_cancelled()
        self._admit()
        self._read_media()
        for adapters in self._adapter_sets():
            self._step(self.plan(adapters))

    def _adapter_sets(self) -> list[lora.AdapterSet]:
        """The adapter sets of the busy slots, the context's current one first."""
        in_use = {slot.request.params.lora: None for slot in self.slots if slot.busy}  # ordered, each once
        return sorted(in_use, key=lambda adapters: adapters != self.ctx.lora)

    def _step(self, plan: Plan) -> None:
        if not plan.chunks:
            return
        lora.apply(self.ctx, plan.lora)
        started = time.perf_counter()
        try:
            self.ctx.decode(self.batch)
        except HeliosError as error:
            self._fail_batch(error)
            return
        self.commit(plan)
        stats = self.stats
        stats.steps += 1
        stats.batch_tokens += self.batch.n_tokens
        stats.batch_sequences += len(plan.chunks)
        stats.busy_seconds += time.perf_counter() - started

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.busy and slot.request.cancelled:
                self._finish(slot, "cancelled")
        if any(r.cancelled for r in self.waiting):
            for request in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(request)
                self._dequeued(request)
                _deliver(request, Done("cancelled", usage=request.seq.usage, timings=request.timings))

    def fail_waiting(self, error: Exception) -> None:
        """End every request still waiting for a slot with `error`."""
        while self.waiting:
            request = self.waiting.popleft()
            self._dequeued(request)
            _deliver(request, Done(None, error, request.seq.usage, request.timings))

    def _dequeued(self, request: Request) -> None:
        if self.on_dequeue is not None:
            self.on_dequeue(request)

    def _admit(self) -> None:
        while self.waiting:
            free = [slot for slot in self.slots if not slot.busy]
            if not free:
                return
            request = self.waiting.popleft()
            self._dequeued(request)
            if request.seq.scores_prompt:
                # Every prompt row needs its logits, so nothing cached helps: spare the best caches.
                slot = min(free, key=lambda s: len(s.cache.tokens))
                if self.prompt_cache is not None:
                    self.prompt_cache.stash(self.ctx, slot.cache)
                slot.cache.forget(self.ctx)
                slot.cache.lora = request.params.lora
                cached = 0
            else:
                slot = max(free, key=lambda s: _slot_score(s, request.prompt, request.params.lora))
                if self.prompt_cache is not None:  # the tier may hold a longer prefix; a long tail is saved first
                    seq = self.prompt_cache.admit(
                        self.ctx, [s.cache for s in free], slot.cache, request.prompt, request.params.lora
                    )
                    slot = next(s for s in free if s.cache is seq)
                cached = slot.cache.reuse(self.ctx, request.prompt, request.params.lora)
            request.seq.usage.cached_tokens = cached
            request.started_at = time.perf_counter()
            if cached:
                self.stats.cache_hits += 1
                self.stats.cached_tokens += cached
            slot.request = request
            slot.pending = request.prompt[cached:]
            slot.next_pos = cached
            if request.speculates:
                slot.acceptance = SlotAcceptance()
            if request.backend is not None:
                try:
                    slot.sampler = BackendSampler(self.ctx, slot.cache.seq_id, request.backend)
                except HeliosError as error:  # a backend without the ops: the Python path is exact too
                    logger.info("request %d samples in Python: %s", request.id, error)
                    request.backend = None

    # --- the plan -----------------------------------------------------------------

    def plan(self, adapters: lora.AdapterSet = ()) -> Plan:
        """Fill the batch from the slots whose requests run under `adapters`: every generating slot's last
        token (and its draft), then prompt chunks in arrival order, within n_batch."""
        batch = self.batch
        batch.clear()
        plan = Plan(lora=adapters)
        busy = [s for s in self.slots if s.busy and s.request.params.lora == adapters]
        generating = [s for s in busy if not s.pending]
        # Slots sharing a BatchSampler side by side, so their rows are one view of the output.
        generating.sort(key=lambda s: id(s.request.params.batch_sampler or 0))
        offers = self._drafts(generating, batch.capacity - len(generating))
        for slot in generating:
            offer = offers.get(slot.cache.seq_id)
            draft = offer.draft if offer is not None else EMPTY
            last = slot.request.seq.tokens[-1:]
            rows = batch.add(
                np.concatenate((last, draft)) if draft.size else last,
                slot.next_pos,
                slot.cache.seq_id,
                logits_last=True,
            )
            if draft.size:
                batch.logits[rows] = 1
            plan.chunks.append(
                Chunk(
                    slot,
                    rows,
                    slot.next_pos,
                    samples=True,
                    draft=draft,
                    draft_key=offer.key if offer is not None else (),
                )
            )
        room = batch.capacity - batch.n_tokens
        # While others generate, read prompts in small chunks so their streams keep flowing.
        budget = min(room, self.prefill_per_step) if generating else room
        scoring_rows = ROWS_PER_DECODE
        for slot in sorted((s for s in busy if s.pending), key=lambda s: s.request.submitted_at):
            seq = slot.request.seq
            limit = min(budget, scoring_rows) if seq.scores_prompt else budget
            if slot.request.media is not None:  # a media chunk next is read by _read_media, not in this batch
                limit = min(limit, slot.request.media.text_ahead(slot.next_pos))
            if limit <= 0:
                continue
            tokens = slot.pending[:limit]
            last = len(tokens) == len(slot.pending)
            samples = last and seq.max_new > 0  # max_tokens=0: the prompt is all there is to do
            rows = batch.add(tokens, slot.next_pos, slot.cache.seq_id, logits_last=samples)
            chunk = Chunk(slot, rows, slot.next_pos, prompt=len(tokens), samples=samples)
            if seq.scores_prompt:
                # Row p predicts prompt token p + 1: every row but the prompt's last.
                n_scored = len(tokens) - 1 if last else len(tokens)
                if n_scored:
                    first_output = int(np.count_nonzero(batch.logits[: rows.start]))
                    batch.logits[rows.start : rows.start + n_scored] = 1
                    chunk.scored = (first_output, n_scored, slot.next_pos)
                    scoring_rows -= n_scored
            plan.chunks.append(chunk)
            budget -= len(tokens)
        return plan

    def _read_media(self) -> None:
        """One bounded piece (an encode, or a decode of embeddings) of the slots whose next prompt token is media:
        of the earliest such request only while others generate, so their streams keep flowing."""
        generating = any(slot.busy and not slot.pending for slot in self.slots)
        budget = self.prefill_per_step if generating else self.ctx.n_batch
        reading = [s for s in self.slots if s.busy and s.pending and s.request.media is not None]
        reading = [s for s in reading if s.request.media.media_at(s.next_pos) is not None]
        reading.sort(key=lambda s: s.request.submitted_at)
        for slot in reading[:1] if generating else reading:
            media = slot.request.media
            lora.apply(self.ctx, slot.request.params.lora)
            try:
                n, pos = media_step.read(self.ctx, slot.cache.seq_id, slot.next_pos, media, budget)
            except HeliosError as error:
                self._forget(slot)
                self._finish(slot, None, error)
                continue
            if pos < slot.next_pos:  # a cached prefix ended inside a chunk that is read whole: from its start
                self.ctx.seq_rm(slot.cache.seq_id, pos, -1)
                del slot.cache.tokens[pos:]
                slot.pending = slot.request.prompt[pos:]
            slot.cache.tokens.extend(slot.pending[:n])
            slot.pending = slot.pending[n:]
            slot.next_pos = pos
            self.stats.prompt_tokens_decoded += n

    def _drafts(self, generating: list[Slot], room: int) -> dict[int, Offer]:
        """The drafts to verify this step, by seq_id: what pays best over all generating slots.

        Each speculating slot offers what its drafter guesses (never past
        max_tokens, the token after a whole draft being one more, or the
        context), with its chance of keeping each token; `allocate` then cuts
        the offers to the lengths that give the most expected tokens per cost
        of the step, within the draft budget and the batch.
        """
        spec = self.speculation
        if spec is None:
            return {}
        offers: dict[int, Offer] = {}
        for slot in generating:
            seq = slot.request.seq
            if not slot.request.speculates or (seq.reasoning is not None and seq.reasoning.forced):
                continue  # tokens the engine writes next need no draft
            k = min(
                spec.draft_max,
                seq.max_new - seq.usage.completion_tokens - 1,
                self.n_ctx_per_seq - 2 - slot.next_pos,
                room,
            )
            if k <= 0:
                continue
            offer = spec.offer(slot.drafter, slot.acceptance, seq.tokens, k, seq.sampler is greedy)
            if offer is not None:
                offers[slot.cache.seq_id] = offer
        if not offers:  # no slot drafts (and maybe none generates: a step of prompts alone)
            return {}
        lengths = allocate(
            [(o.draft.size, o.acceptance) for o in offers.values()],
            len(generating),
            min(spec.draft_budget, room),
            spec.cost,
        )
        return {
            seq_id: Offer(offer.draft[:k], offer.acceptance, offer.key)
            for (seq_id, offer), k in zip(offers.items(), lengths, strict=True)
            if k
        }

    # --- the commit -----------------------------------------------------------------

    def commit(self, plan: Plan) -> None:
        """Take in what the decode of `plan`'s batch gave each slot: prompt read, tokens chosen or verified."""
        now = time.perf_counter()
        sampling = [chunk for chunk in plan.chunks if chunk.slot.busy and self._account(chunk, now)]
        failed = self._compute_masks([chunk.slot for chunk in sampling])
        batched: dict[int, list[Chunk]] = {}  # chunks by the BatchSampler their requests share
        for chunk in sampling:
            slot = chunk.slot
            request = slot.request
            seq = request.seq
            error = failed.get(slot.cache.seq_id)
            if error is not None:
                logger.warning("request %d failed in its constraint: %r", request.id, error)
                self._finish(slot, None, error)
                continue
            if seq.params.batch_sampler is not None:
                batched.setdefault(id(seq.params.batch_sampler), []).append(chunk)
                continue
            if chunk.draft.size:
                self._verify(chunk)
                continue
            try:
                if slot.sampler is not None:  # drawn in the graph: no row to read
                    forced = seq.forced_token()
                    step = seq.accept(slot.sampler.token(chunk.last_row) if forced is None else forced, None)
                else:
                    step = seq.step(self.ctx.logits(chunk.last_row))
            except Exception as error:  # a custom sampler or processor failed: end this request only
                logger.warning("request %d failed in its sampler: %r", request.id, error)
                self._finish(slot, None, error)
                continue
            self._commit(slot, step)
        for group in batched.values():
            self._sample_together(group)

    def _account(self, chunk: Chunk, now: float) -> bool:
        """Take in a chunk's tokens as cached; True when its slot samples a token from its rows now.

        A verify chunk's tokens are taken in by _verify, which knows how many were kept.
        """
        slot = chunk.slot
        request = slot.request
        seq = request.seq
        prompt_read = False
        if chunk.prompt:
            slot.cache.tokens.extend(slot.pending[: chunk.prompt])
            slot.pending = slot.pending[chunk.prompt :]
            slot.next_pos += chunk.prompt
            prompt_read = not slot.pending
            self.stats.prompt_tokens_decoded += chunk.prompt
        elif not chunk.draft.size:
            slot.cache.tokens.append(int(seq.tokens[-1]))
            slot.next_pos += 1
        if chunk.scored is not None:
            first_output, n_rows, pos = chunk.scored
            seq.prompt_scores.fill(pos, self.ctx.output_logits()[first_output : first_output + n_rows])
        if prompt_read:
            if seq.scores_prompt:
                _deliver(request, seq.prompt_scores)
            if seq.max_new <= 0:
                request.timings.prompt_ms = 1000.0 * (now - request.started_at)
                seq.finish_reason = "length"
                self._finish(slot, "length")
                return False
        if not chunk.samples:
            return False
        if not request.first_token_at:
            request.first_token_at = now
            request.timings.prompt_ms = 1000.0 * (now - request.started_at)
        return True

    def _verify(self, chunk: Chunk) -> None:
        """Keep the drafted tokens the target agrees with, and one of its own; forget the rest from memory."""
        slot = chunk.slot
        request = slot.request
        seq = request.seq
        last = int(seq.tokens[-1])
        draft = chunk.draft
        first = chunk.rows.start
        try:
            steps = verify(seq, lambda i: self.ctx.logits(first + i), draft)
        except Exception as error:  # a custom sampler or processor failed: end this request only
            logger.warning("request %d failed in its sampler: %r", request.id, error)
            self._forget(slot)
            self._finish(slot, None, error)
            return
        n = len(steps)
        accepted = n - 1 + int(n <= draft.size and steps[-1].token == draft[n - 1])
        # The memory holds the last token and every draft token before the newest step's token;
        # that token is decoded next step, as in plain decoding.
        slot.cache.tokens.append(last)
        slot.cache.tokens.extend(draft[: n - 1].tolist())
        slot.next_pos = chunk.pos + n
        if n <= draft.size:  # positions past the newest step's token were refused
            self.ctx.seq_rm(slot.cache.seq_id, slot.next_pos, -1)
        self.speculation.judged(slot.acceptance, chunk.draft_key, draft.size, accepted)
        self.stats.draft_tokens += draft.size
        self.stats.draft_accepted += accepted
        request.timings.draft_tokens += draft.size
        request.timings.draft_accepted += accepted
        for step in steps:
            self._commit(slot, step)

    def _compute_masks(self, slots: list[Slot]) -> dict[int, Exception]:
        """The next mask of every ConstraintProcessor of `slots`, in one compute_masks call (GIL released).

        Each processor is advanced to its slot's tokens first; one that refuses
        them (a sampler that ignored the mask, a processor reused from another
        request) is returned as its slot's error, by seq_id, and ends that
        request only. Should the one call fail, every processor computes its
        own mask when called, and raises for its own request.
        """
        items: list[tuple[ConstraintProcessor, np.ndarray]] = []
        failed: dict[int, Exception] = {}
        seen: set[int] = set()  # one matcher must not be computed twice at once
        for slot in slots:
            seq = slot.request.seq
            for processor in seq.processors:
                if not isinstance(processor, ConstraintProcessor) or id(processor) in seen:
                    continue
                try:
                    processor.advance(seq.generated)
                except Exception as error:
                    failed[slot.cache.seq_id] = error
                    break
                seen.add(id(processor))
                items.append((processor, seq.generated))
        if items:
            started = time.perf_counter()
            try:
                compute_masks(items)
            except Exception as error:  # each processor computes its own mask, and raises for its own request
                logger.warning("computing %d masks together failed: %r", len(items), error)
            self.stats.mask_seconds += time.perf_counter() - started
        return failed

    def _sample_together(self, chunks: list[Chunk]) -> None:
        """One call of a BatchSampler for every slot that uses it: rows in, one token per row out.

        The rows are a view of llama.cpp's output when they lie side by side and no
        processor changed them (plan() puts a sampler's generating slots together),
        a read-only stack of the (processed) rows otherwise.
        """
        slots = [chunk.slot for chunk in chunks]
        sampler = slots[0].request.seq.params.batch_sampler
        raw = [self.ctx.logits(chunk.last_row) for chunk in chunks]
        try:
            processed = [slot.request.seq.process(row) for slot, row in zip(slots, raw, strict=True)]
            outputs = np.cumsum(self.batch.logits[: self.batch.n_tokens]) - 1  # batch row -> output row
            first = int(outputs[chunks[0].last_row])
            together = [int(outputs[chunk.last_row]) for chunk in chunks] == list(range(first, first + len(slots)))
            if together and all(p is r for p, r in zip(processed, raw, strict=True)):
                rows = self.ctx.output_logits()[first : first + len(slots)]
            else:
                rows = np.stack(processed)
                rows.flags.writeable = False
            tokens = np.asarray(sampler(rows, [slot.request.seq.state for slot in slots])).reshape(-1)
            if tokens.size != len(slots):
                raise ValueError(f"the batch sampler returned {tokens.size} tokens for {len(slots)} rows")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.ctx.n_vocab):
                raise ValueError(f"the batch sampler returned a token outside [0, {self.ctx.n_vocab})")
        except Exception as error:  # ends the requests that share this sampler, no others
            logger.warning("a batch sampler failed for %d requests: %r", len(slots), error)
            for slot in slots:
                self._finish(slot, None, error)
            return
        for slot, token, row in zip(slots, tokens.tolist(), raw, strict=True):
            seq = slot.request.seq
            forced = seq.forced_token()
            self._commit(slot, seq.accept(int(token) if forced is None else forced, row))

    def _commit(self, slot: Slot, step: Step) -> None:
        request = slot.request
        self.stats.generated_tokens += 1
        request.timings.generation_ms = 1000.0 * (time.perf_counter() - request.first_token_at)
        _deliver(request, step)
        if step.finish_reason:
            self._finish(slot, step.finish_reason)

    def _finish(self, slot: Slot, reason: str | None, error: Exception | None = None) -> None:
        request = slot.request
        slot.request = None
        slot.pending = []
        slot.acceptance = None
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        self.stats.reasoning_tokens += request.seq.usage.reasoning_tokens
        stop = request.seq.stops.stopped_by if reason == "stop" else None
        _deliver(request, Done(reason, error, request.seq.usage, request.timings, stop))

    def fail_all(self, error: Exception) -> None:
        """End every running request with `error`, forgetting their caches (their state is unknown)."""
        for slot in self.slots:
            if slot.busy:
                self._forget(slot)
                self._finish(slot, None, error)

    def _forget(self, slot: Slot) -> None:
        try:
            slot.cache.forget(self.ctx)
        except HeliosError:  # the context is closed: there is nothing left to forget
            slot.cache.tokens.clear()

    def _fail_batch(self, error: Exception) -> None:
        """A decode failed: llama.cpp restored the memory; end every request in the batch."""
        in_batch = set(self.batch.seq_id[: self.batch.n_tokens, 0].tolist())
        for slot in self.slots:
            if slot.busy and slot.cache.seq_id in in_batch:
                self._forget(slot)
                self._finish(slot, None, error)


# A shared prefix shorter than this fraction of the prompt or of the slot's
# cache (a lone BOS, a chat header) counts as no match.
MIN_SHARED_FRACTION = 0.1


def _slot_score(slot: Slot, prompt: list[int], adapters: tuple = ()) -> tuple[int, int]:
    """The longest common prefix wins; ties (and no real match) go to the slot holding the fewest tokens.

    So a prompt that shares only BOS with a long cache takes an emptier slot
    instead of wiping that cache.
    """
    shared = slot.cache.common_prefix(prompt, adapters)  # nothing under another adapter set
    if shared < MIN_SHARED_FRACTION * max(len(prompt), len(slot.cache.tokens)):
        shared = 0
    return shared, -len(slot.cache.tokens)


def _deliver(request: Request, event: Event) -> None:
    """Hand an event to a request's sink; a sink that fails loses its request's events, nothing more."""
    try:
        request.sink(event)
    except Exception:
        logger.exception("the sink of request %d failed; its events are dropped", request.id)
        request.cancelled = True


class Engine:
    """A Scheduler on its own thread. submit() from any thread; events arrive on the request's sink.

    Shutting down, in order: stop_accepting() refuses new work and ends the
    waiting requests; wait_idle(grace) lets the running ones finish; close()
    ends whatever still runs and stops the thread. The engine never frees its
    context: its owner does, after close().
    """

    def __init__(
        self,
        ctx: Context,
        *,
        max_queue: int = 64,
        prefill_per_step: int = PREFILL_PER_STEP,
        n_ctx_per_seq: int | None = None,
        speculation: Speculation | None = None,
        prompt_cache: PromptCache | None = None,
        backend_sampling: bool | None = None,
    ):
        self.scheduler = Scheduler(
            ctx,
            prefill_per_step=prefill_per_step,
            n_ctx_per_seq=n_ctx_per_seq,
            on_dequeue=self._dequeued,
            speculation=speculation,
            prompt_cache=prompt_cache,
            backend_sampling=backend_sampling,
        )
        self.max_queue = max_queue
        self._inbox: queue.SimpleQueue[Request | str | tuple | None] = queue.SimpleQueue()  # tuple: call()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when the engine may have gone idle
        self._queued = 0  # submitted, not yet admitted to a slot (or ended while waiting)
        self._idle = True  # nothing queued, nothing running
        self._accepting = True
        self._stopping = False
        self._step_listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="helios-engine", daemon=True)
        self._thread.start()

    def add_step_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` on the engine thread after every step (and once at shutdown).

        Sinks called during a step may hold its events and hand them on in one batch there.
        """
        self._step_listeners.append(listener)

    @property
    def thread_id(self) -> int | None:
        """The engine thread's identifier: sinks called on it are inside a step."""
        return self._thread.ident

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
            self._inbox.put(request)
        return request

    def call(self, fn: Callable[[Scheduler], object]) -> Future:
        """Run fn(scheduler) on the engine thread, between steps: for work on the context (slot files).

        The Future gets its result or exception; EngineShutdownError if the engine stops first.
        """
        future: Future = Future()
        with self._lock:
            if self._stopping:
                raise EngineShutdownError("the server is shutting down")
            self._inbox.put((fn, future))
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
        self._inbox.put(_FAIL_WAITING)

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
            self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the engine thread did not stop within %g s; it ends after its current step", timeout)

    # --- the engine thread ---------------------------------------------------------

    def _run(self) -> None:
        scheduler = self.scheduler
        shutdown = EngineShutdownError("the server is shutting down; the request was not finished")
        while not self._stopping:
            # Block when idle; otherwise take whatever arrived since the last step.
            block = not scheduler.has_work
            while True:
                try:
                    item = self._inbox.get(block=block)
                except queue.Empty:
                    break
                block = False
                if item is None:
                    break
                if item is _FAIL_WAITING:
                    scheduler.fail_waiting(
                        EngineShutdownError("the server is shutting down; the request was still waiting for a slot")
                    )
                elif isinstance(item, tuple):
                    _run_call(scheduler, *item)
                else:
                    self._take(item)
            if self._stopping:
                break
            try:
                scheduler.step()
            except Exception as error:  # a bug must not take the engine thread (and every later request) down
                logger.exception("engine step failed; ending the requests in flight")
                scheduler.fail_all(HeliosError(f"internal engine error: {error}"))
            self._note_idle()
            self._after_step()
        scheduler.fail_all(shutdown)
        while True:  # submitted but never taken from the inbox
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                self._dequeued(item)
                _deliver(item, Done(None, shutdown))
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
            _deliver(request, Done(None, error))

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
