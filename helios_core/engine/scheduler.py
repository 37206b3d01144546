"""The Scheduler: slots over one context; each step admits, plans a batch, decodes it once and commits.

Admission (prefix-matched slots, the RAM tier), the plan (generating slots' last tokens and
drafts, then prompt chunks within the batch and the prefill budget), media reading, and the
end of requests live here; what the decoded rows give each slot is commit.py's.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from helios_core import lora, media_step
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.engine import commit
from helios_core.engine.request import Done, PromptTooLongError, Request, deliver
from helios_core.engine.slots import Chunk, Plan, SchedulerStats, Slot, slot_score
from helios_core.errors import HeliosError
from helios_core.kvcache import CachedSequence
from helios_core.prompt_cache import PromptCache
from helios_core.sampling import greedy
from helios_core.sampling.backend import BackendSampler, chain_for, enabled_by_default
from helios_core.scoring import ROWS_PER_DECODE
from helios_core.sequence import SequenceState
from helios_core.speculative import EMPTY, Offer, SlotAcceptance, Speculation, allocate, can_verify

logger = logging.getLogger("helios.engine")

# Prompt tokens read per step while other slots generate. Larger chunks stall the running
# streams longer, smaller ones leave a slot out of the generating batch for more steps, and on a
# CPU a batch of 3 rows costs about what one of 4 does (StepCost): on bench_speculative's copy
# workload 512 beat 128 (docs/benchmarks.md). llama-server reads a whole prompt in one step.
PREFILL_PER_STEP = 512


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
                self.finish(slot, "cancelled")
        if any(r.cancelled for r in self.waiting):
            for request in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(request)
                self._dequeued(request)
                deliver(request, Done("cancelled", usage=request.seq.usage, timings=request.timings))

    def fail_waiting(self, error: Exception) -> None:
        """End every request still waiting for a slot with `error`."""
        while self.waiting:
            request = self.waiting.popleft()
            self._dequeued(request)
            deliver(request, Done(None, error, request.seq.usage, request.timings))

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
                slot = max(free, key=lambda s: slot_score(s, request.prompt, request.params.lora))
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
                slot.cache.pos(slot.next_pos),
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
            rows = batch.add(tokens, slot.cache.pos(slot.next_pos), slot.cache.seq_id, logits_last=samples)
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
                n, pos = media_step.read(self.ctx, slot.cache, slot.next_pos, media, budget)
            except HeliosError as error:
                self.forget(slot)
                self.finish(slot, None, error)
                continue
            if pos < slot.next_pos:  # a cached prefix ended inside a chunk that is read whole: from its start
                slot.cache.truncate(self.ctx, pos)
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
        commit.commit(self, plan)

    def finish(self, slot: Slot, reason: str | None, error: Exception | None = None) -> None:
        request = slot.request
        slot.request = None
        slot.pending = []
        slot.acceptance = None
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        self.stats.reasoning_tokens += request.seq.usage.reasoning_tokens
        stop = request.seq.stops.stopped_by if reason == "stop" else None
        deliver(request, Done(reason, error, request.seq.usage, request.timings, stop))

    def fail_all(self, error: Exception) -> None:
        """End every running request with `error`, forgetting their caches (their state is unknown)."""
        for slot in self.slots:
            if slot.busy:
                self.forget(slot)
                self.finish(slot, None, error)

    def forget(self, slot: Slot) -> None:
        try:
            slot.cache.forget(self.ctx)
        except HeliosError:  # the context is closed: there is nothing left to forget
            slot.cache.tokens.clear()

    def _fail_batch(self, error: Exception) -> None:
        """A decode failed: llama.cpp restored the memory; end every request in the batch."""
        in_batch = set(self.batch.seq_id[: self.batch.n_tokens, 0].tolist())
        for slot in self.slots:
            if slot.busy and slot.cache.seq_id in in_batch:
                self.forget(slot)
                self.finish(slot, None, error)
