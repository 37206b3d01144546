"""The commit half of a step: what each slot's rows of the decoded batch give it.

A slot that read prompt takes its tokens in as cached; a slot that samples gets its token
from its own SequenceState (or from its backend chain, or from a BatchSampler shared with
other slots, one call for all of them), after the masks of every constrained slot have been
computed together; a slot that verifies a draft keeps what the target agrees with and has the
refused positions cut from the KV memory. The scheduler (scheduler.py) calls `commit`; the rows
and the cut are its runner's (runner.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from helios_core.constraint import ConstraintProcessor, compute_masks
from helios_core.engine.request import deliver
from helios_core.engine.slots import Chunk, Plan, Slot
from helios_core.sequence import Step
from helios_core.speculative import verify

if TYPE_CHECKING:
    from helios_core.engine.scheduler import Scheduler

logger = logging.getLogger("helios.engine")


def commit(scheduler: Scheduler, plan: Plan) -> None:
    """Take in what the decode of `plan`'s batch gave each slot: prompt read, tokens chosen or verified."""
    now = time.perf_counter()
    sampling = [chunk for chunk in plan.chunks if chunk.slot.busy and _account(scheduler, chunk, now)]
    failed = _compute_masks(scheduler, [chunk.slot for chunk in sampling])
    batched: dict[int, list[Chunk]] = {}  # chunks by the BatchSampler their requests share
    for chunk in sampling:
        slot = chunk.slot
        request = slot.request
        seq = request.seq
        error = failed.get(slot.cache.seq_id)
        if error is not None:
            logger.warning("request %d failed in its constraint: %r", request.id, error)
            scheduler.finish(slot, None, error)
            continue
        if seq.params.batch_sampler is not None:
            batched.setdefault(id(seq.params.batch_sampler), []).append(chunk)
            continue
        if chunk.draft.size:
            _verify(scheduler, chunk)
            continue
        try:
            if slot.sampler is not None:  # drawn in the graph: no row to read
                forced = seq.forced_token()
                step = seq.accept(slot.sampler.token(chunk.last_row) if forced is None else forced, None)
            else:
                step = seq.step(scheduler.runner.logits(chunk.last_row))
        except Exception as error:  # a custom sampler or processor failed: end this request only
            logger.warning("request %d failed in its sampler: %r", request.id, error)
            scheduler.finish(slot, None, error)
            continue
        _deliver_step(scheduler, slot, step)
    for group in batched.values():
        _sample_together(scheduler, group)


def _account(scheduler: Scheduler, chunk: Chunk, now: float) -> bool:
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
        scheduler.stats.prompt_tokens_decoded += chunk.prompt
    elif not chunk.draft.size:
        slot.cache.tokens.append(seq.last_token)
        slot.next_pos += 1
    if chunk.scored is not None:
        first_output, n_rows, pos = chunk.scored
        seq.prompt_scores.fill(pos, scheduler.runner.outputs()[first_output : first_output + n_rows])
    if prompt_read:
        if seq.scores_prompt:
            deliver(request, seq.prompt_scores)
        if seq.max_new <= 0:
            request.timings.prompt_ms = 1000.0 * (now - request.started_at)
            seq.finish_reason = "length"
            scheduler.finish(slot, "length")
            return False
    if not chunk.samples:
        return False
    if not request.first_token_at:
        request.first_token_at = now
        request.timings.prompt_ms = 1000.0 * (now - request.started_at)
    return True


def _verify(scheduler: Scheduler, chunk: Chunk) -> None:
    """Keep the drafted tokens the target agrees with, and one of its own; forget the rest from memory."""
    slot = chunk.slot
    request = slot.request
    seq = request.seq
    last = seq.last_token
    draft = chunk.draft
    first = chunk.rows.start
    runner = scheduler.runner
    try:
        steps = verify(seq, lambda i: runner.logits(first + i), draft)
    except Exception as error:  # a custom sampler or processor failed: end this request only
        logger.warning("request %d failed in its sampler: %r", request.id, error)
        scheduler.forget(slot)
        scheduler.finish(slot, None, error)
        return
    n = len(steps)
    accepted = n - 1 + int(n <= draft.size and steps[-1].token == draft[n - 1])
    # The memory holds the last token and every draft token before the newest step's token;
    # that token is decoded next step, as in plain decoding.
    slot.cache.tokens.append(last)
    slot.cache.tokens.extend(draft[: n - 1].tolist())
    slot.next_pos = chunk.pos + n
    if n <= draft.size:  # positions past the newest step's token were refused
        runner.trim(slot.cache, slot.next_pos)
    scheduler.speculation.judged(slot.acceptance, chunk.draft_key, draft.size, accepted)
    scheduler.stats.draft_tokens += draft.size
    scheduler.stats.draft_accepted += accepted
    request.timings.draft_tokens += draft.size
    request.timings.draft_accepted += accepted
    for step in steps:
        _deliver_step(scheduler, slot, step)


def _compute_masks(scheduler: Scheduler, slots: list[Slot]) -> dict[int, Exception]:
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
        scheduler.stats.mask_seconds += time.perf_counter() - started
    return failed


def _sample_together(scheduler: Scheduler, chunks: list[Chunk]) -> None:
    """One call of a BatchSampler for every slot that uses it: rows in, one token per row out.

    The rows are a view of llama.cpp's output when they lie side by side and no
    processor changed them (plan() puts a sampler's generating slots together),
    a read-only stack of the (processed) rows otherwise.
    """
    slots = [chunk.slot for chunk in chunks]
    sampler = slots[0].request.seq.params.batch_sampler
    runner = scheduler.runner
    raw = [runner.logits(chunk.last_row) for chunk in chunks]
    try:
        processed = [slot.request.seq.process(row) for slot, row in zip(slots, raw, strict=True)]
        first = chunks[0].last_output
        together = [chunk.last_output for chunk in chunks] == list(range(first, first + len(slots)))
        if together and all(p is r for p, r in zip(processed, raw, strict=True)):
            rows = runner.outputs()[first : first + len(slots)]
        else:
            rows = np.stack(processed)
            rows.flags.writeable = False
        tokens = np.asarray(sampler(rows, [slot.request.seq.state for slot in slots])).reshape(-1)
        if tokens.size != len(slots):
            raise ValueError(f"the batch sampler returned {tokens.size} tokens for {len(slots)} rows")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= runner.n_vocab):
            raise ValueError(f"the batch sampler returned a token outside [0, {runner.n_vocab})")
    except Exception as error:  # ends the requests that share this sampler, no others
        logger.warning("a batch sampler failed for %d requests: %r", len(slots), error)
        for slot in slots:
            scheduler.finish(slot, None, error)
        return
    for slot, token, row in zip(slots, tokens.tolist(), raw, strict=True):
        seq = slot.request.seq
        forced = seq.forced_token()
        _deliver_step(scheduler, slot, seq.accept(int(token) if forced is None else forced, row))


def _deliver_step(scheduler: Scheduler, slot: Slot, step: Step) -> None:
    request = slot.request
    scheduler.stats.generated_tokens += 1
    request.timings.generation_ms = 1000.0 * (time.perf_counter() - request.first_token_at)
    deliver(request, step)
    if step.finish_reason:
        scheduler.finish(slot, step.finish_reason)
