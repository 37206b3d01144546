"""The Scheduler: slots over one Runner; each step admits, plans a batch, has it decoded once and commits.

Admission (prefix-matched slots), the plan (generating slots' last tokens and drafts, then
prompt chunks within the batch and the prefill budget), the order of media reading, and the
end of requests live here; what the decoded rows give each slot is commit.py's. Everything
that touches the model or its KV memory is the runner's (runner.py: the protocol;
llama_runner.py: over a llama context), so the scheduler runs on a scripted one in tests.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from helios_core.engine import commit
from helios_core.engine.request import Done, PromptTooLongError, Request, deliver
from helios_core.engine.runner import Runner
from helios_core.engine.slots import Plan, SchedulerStats, Slot, slot_score
from helios_core.errors import HeliosError
from helios_core.kvcache import CachedSequence
from helios_core.sampling import greedy
from helios_core.sampling.backend import chain_for, enabled_by_default
from helios_core.scoring import ROWS_PER_DECODE
from helios_core.sequence import SequenceState
from helios_core.speculative import Offer, SlotAcceptance, Speculation, allocate, can_verify

logger = logging.getLogger("helios.engine")

# Prompt tokens read per step while other slots generate. Larger chunks stall the running
# streams longer, smaller ones leave a slot out of the generating batch for more steps, and on a
# CPU a batch of 3 rows costs about what one of 4 does (StepCost): on bench_speculative's copy
# workload 512 beat 128 (docs/benchmarks.md). llama-server reads a whole prompt in one step.
PREFILL_PER_STEP = 512


class Scheduler:
    """Slots over one Runner, a slot per sequence. Not thread-safe: one thread calls submit/step (and the runner)."""

    def __init__(
        self,
        runner: Runner,
        *,
        prefill_per_step: int = PREFILL_PER_STEP,
        n_ctx_per_seq: int | None = None,
        on_dequeue: Callable[[Request], None] | None = None,
        speculation: Speculation | None = None,
        backend_sampling: bool | None = None,
    ):
        """runner: the model and memory (llama_runner.LlamaRunner over a Context; it holds the RAM tier).

        on_dequeue: called (on this thread) as each request leaves the waiting queue, admitted or not.
        speculation: draft and verify tokens for the requests that allow it (None: never).
        backend_sampling: run the built-in chains that are exact there in the compute graph
            (sampling/backend.py). None: where it pays (top-k chains; greedy only with the logits
            on a GPU), unless HELIOS_BACKEND_SAMPLING=0; True: every such chain; False: none.
        """
        self.runner = runner
        self.on_dequeue = on_dequeue
        self.model = runner.model
        self.speculation = speculation
        self.slots = [Slot(CachedSequence(i)) for i in range(runner.n_seq_max)]
        if speculation is not None:
            for slot in self.slots:
                slot.drafter = speculation.drafter_for(slot.cache.seq_id)
        self.waiting: deque[Request] = deque()
        self.n_ctx_per_seq = min(n_ctx_per_seq or runner.n_ctx_seq, runner.n_ctx_seq)
        self.prefill_per_step = max(1, prefill_per_step)
        self.stats = SchedulerStats()
        wanted = enabled_by_default() if backend_sampling is None else backend_sampling
        self.backend_sampling = wanted and runner.samples_in_graph  # a scripted runner has no graph to draw in
        # Greedy in the graph pays where the logits are on a GPU; on CPU threads ggml's argmax over the
        # vocabulary cost ~1 ms a token more than NumPy's (measured), so there greedy stays in Python unless
        # backend_sampling=True asks for every chain the graph draws exactly.
        self.greedy_in_graph = self.backend_sampling and (backend_sampling is True or runner.model.gpu_output)

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
        for adapters, slots in self._by_adapter_set([slot for slot in self.slots if slot.busy]):
            self._step(self.plan(slots, adapters))

    def _by_adapter_set(self, busy: list[Slot]) -> list[tuple[tuple, list[Slot]]]:
        """The busy slots by their requests' adapter set (lora.AdapterSet), the runner's current set first."""
        groups: dict[tuple, list[Slot]] = {}
        for slot in busy:
            groups.setdefault(slot.request.params.lora, []).append(slot)
        if len(groups) < 2:
            return list(groups.items())
        current = self.runner.adapters
        return sorted(groups.items(), key=lambda group: group[0] != current)

    def _step(self, plan: Plan) -> None:
        if not plan.chunks:
            return
        started = time.perf_counter()
        try:
            self.runner.decode(plan)
        except HeliosError as error:
            self._fail_batch(plan, error)
            return
        self.commit(plan)
        stats = self.stats
        stats.steps += 1
        stats.batch_tokens += plan.n_tokens
        stats.batch_sequences += len(plan.chunks)
        stats.busy_seconds += time.perf_counter() - started

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.busy and slot.request.cancelled:
                self.finish(slot, "cancelled")
        if self.waiting and any(r.cancelled for r in self.waiting):
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
                self.runner.clear(slot.cache)
                slot.cache.lora = request.params.lora
                cached = 0
            else:
                slot = max(free, key=lambda s: slot_score(s, request.prompt, request.params.lora))
                seq, cached = self.runner.admit(
                    [s.cache for s in free], slot.cache, request.prompt, request.params.lora
                )
                slot = next(s for s in free if s.cache is seq)
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
                    slot.sampler = self.runner.graph_sampler(slot.cache.seq_id, request.backend)
                except HeliosError as error:  # a backend without the ops: the Python path is exact too
                    logger.info("request %d samples in Python: %s", request.id, error)
                    request.backend = None

    # --- the plan -----------------------------------------------------------------

    def plan(self, slots: list[Slot], adapters: tuple = ()) -> Plan:
        """One batch of `slots`, whose requests run under adapter set `adapters`: every generating slot's
        last token (and its draft), then prompt chunks in arrival order, within the runner's n_batch."""
        capacity = self.runner.n_batch
        plan = Plan(lora=adapters)
        generating = [s for s in slots if not s.pending]
        if len(generating) > 1:
            # Slots sharing a BatchSampler side by side, so their rows are one view of the output.
            generating.sort(key=lambda s: id(s.request.params.batch_sampler or 0))
        offers = self._drafts(generating, capacity - len(generating))
        for slot in generating:
            offer = offers.get(slot.cache.seq_id)
            last = slot.request.seq.last_token
            if offer is None:
                plan.add(slot, [last], slot.next_pos, 0, 1, samples=True)
                continue
            # A verify chunk: every row judges a drafted token (or gives the token after them all).
            tokens = np.empty(1 + offer.draft.size, dtype=np.int32)
            tokens[0] = last
            tokens[1:] = offer.draft
            plan.add(slot, tokens, slot.next_pos, 0, tokens.size, samples=True, draft=offer.draft, draft_key=offer.key)
        if len(generating) == len(slots):
            return plan
        room = capacity - plan.n_tokens
        # While others generate, read prompts in small chunks so their streams keep flowing.
        budget = min(room, self.prefill_per_step) if generating else room
        scoring_rows = ROWS_PER_DECODE
        for slot in sorted((s for s in slots if s.pending), key=lambda s: s.request.submitted_at):
            seq = slot.request.seq
            limit = min(budget, scoring_rows) if seq.scores_prompt else budget
            if slot.request.media is not None:  # a media chunk next is read by _read_media, not in this batch
                limit = min(limit, slot.request.media.text_ahead(slot.next_pos))
            if limit <= 0:
                continue
            tokens = slot.pending[:limit]
            last = len(tokens) == len(slot.pending)
            samples = last and seq.max_new > 0  # max_tokens=0: the prompt is all there is to do
            if not seq.scores_prompt:
                plan.add(
                    slot, tokens, slot.next_pos, len(tokens) - 1, int(samples), prompt=len(tokens), samples=samples
                )
            else:
                # Row p predicts prompt token p + 1: every row but the prompt's last (and that one to sample).
                n_scored = len(tokens) - 1 if last else len(tokens)
                chunk = plan.add(
                    slot, tokens, slot.next_pos, 0, n_scored + int(samples), prompt=len(tokens), samples=samples
                )
                if n_scored:
                    chunk.scored = (chunk.outputs.start, n_scored, slot.next_pos)
                    scoring_rows -= n_scored
            budget -= len(tokens)
        return plan

    def _read_media(self) -> None:
        """One bounded piece (an encode, or a decode of embeddings) of the slots whose next prompt token is media:
        of the earliest such request only while others generate, so their streams keep flowing."""
        reading = [
            s
            for s in self.slots
            if s.busy and s.pending and s.request.media is not None and s.request.media.media_at(s.next_pos) is not None
        ]
        if not reading:
            return
        generating = any(slot.busy and not slot.pending for slot in self.slots)
        budget = self.prefill_per_step if generating else self.runner.n_batch
        reading.sort(key=lambda s: s.request.submitted_at)
        for slot in reading[:1] if generating else reading:
            media = slot.request.media
            try:
                n, pos = self.runner.read_media(slot.cache, slot.next_pos, media, budget, slot.request.params.lora)
            except HeliosError as error:
                self.forget(slot)
                self.finish(slot, None, error)
                continue
            if pos < slot.next_pos:  # a cached prefix ended inside a chunk that is read whole: from its start
                self.runner.trim(slot.cache, pos)
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
        self.runner.forget(slot.cache)

    def _fail_batch(self, plan: Plan, error: Exception) -> None:
        """A decode failed: the runner restored the memory; end every request in the batch."""
        in_batch = {chunk.slot.cache.seq_id for chunk in plan.chunks}
        for slot in self.slots:
            if slot.busy and slot.cache.seq_id in in_batch:
                self.forget(slot)
                self.finish(slot, None, error)
