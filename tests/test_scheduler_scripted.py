"""The scheduler on a scripted runner (tests/scripted_runner.py): no weights, every decode and cut recorded.

The rule: after a token of CYCLE the next one of CYCLE, after anything else CYCLE[0], so
greedy continuations are known in advance and no end-of-generation token ever comes.
"""

from __future__ import annotations

from collections import deque

import pytest

from helios_core.engine import Done, PromptTooLongError, Request, Scheduler
from helios_core.errors import ContextFullError
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_core.sequence import GenerationParams, Step
from helios_core.speculative import Speculation
from tests.scripted_runner import ScriptedRunner, peaked

CYCLE = [1000 + 17 * i for i in range(12)]
BREAK = 4242
GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def vocab_model():
    with Model(default_model_path(), vocab_only=True) as m:
        yield m


def cycle_rule(n_vocab: int):
    def rule(held: list[int]):
        last = held[-1]
        return peaked(n_vocab, {CYCLE[(CYCLE.index(last) + 1) % len(CYCLE)] if last in CYCLE else CYCLE[0]: 5.0})

    return rule


def breaking_rule(n_vocab: int):
    """CYCLE, but every seventh position BREAK: prompt lookup drafts well and is refused at times."""

    def rule(held: list[int]):
        last = held[-1]
        after = CYCLE[(CYCLE.index(last) + 1) % len(CYCLE)] if last in CYCLE else CYCLE[0]
        return peaked(n_vocab, {BREAK: 5.0, after: 4.0} if len(held) % 7 == 0 else {after: 5.0, BREAK: 3.5})

    return rule


def make(vocab_model, slots: int = 1, *, rule=None, n_batch: int = 256, **kw) -> Scheduler:
    rule = rule or cycle_rule(vocab_model.vocab.n_vocab)
    runner = ScriptedRunner(vocab_model, rule, n_seq_max=slots, n_batch=n_batch)
    return Scheduler(runner, n_ctx_per_seq=512, **kw)


def submit(s: Scheduler, prompt, max_tokens: int = 4, **kw) -> tuple[Request, deque]:
    events: deque = deque()
    request = Request(list(prompt), GenerationParams(max_tokens=max_tokens, **GREEDY, **kw), events.append)
    s.submit(request)
    return request, events


def drain(s: Scheduler) -> None:
    while s.has_work:
        s.step()


def tokens(events) -> list[int]:
    return [e.token for e in events if isinstance(e, Step)]


def done(events) -> Done:
    assert isinstance(events[-1], Done)
    return events[-1]


class FakeAdapter:
    """Enough of lora.Adapter for lora.adapter_set: a load order and a name."""

    serial_base = 10_000

    def __init__(self, n: int):
        self.serial = self.serial_base + n
        self.name = f"adapter{n}"


# --- admission ----------------------------------------------------------------------------------------


def test_requests_are_admitted_in_arrival_order_into_free_slots_only(vocab_model):
    s = make(vocab_model, 2)
    dequeued = []
    s.on_dequeue = lambda r: dequeued.append(r)
    first, _ = submit(s, [1, 2, 3])
    second, _ = submit(s, [4, 5, 6])
    third, third_events = submit(s, [7, 8, 9])
    s.step()
    assert dequeued == [first, second]  # two slots: the third waits
    assert [(seq, pos, toks) for seq, pos, toks, _ in s.runner.decoded[0]] == [(0, 0, [1, 2, 3]), (1, 0, [4, 5, 6])]
    assert list(s.waiting) == [third] and not third_events
    drain(s)
    assert dequeued == [first, second, third]
    assert tokens(third_events) == CYCLE[:4]


def test_a_prompt_beyond_the_context_is_refused_at_submit(vocab_model):
    s = make(vocab_model)
    with pytest.raises(PromptTooLongError):
        s.submit(Request([1] * 512, GenerationParams(), lambda e: None))
    with pytest.raises(ValueError, match="empty"):
        s.check_prompt([])
    assert not s.has_work


def test_prompt_reading_is_bounded_by_the_batch(vocab_model):
    s = make(vocab_model, n_batch=8)
    _, events = submit(s, list(range(1, 21)), max_tokens=2)
    drain(s)
    assert s.runner.decodes[:3] == [8, 8, 4]  # the prompt in three pieces, then a token a step
    assert tokens(events) == CYCLE[:2]


# --- prefix reuse ---------------------------------------------------------------------------------------


def test_a_shared_prefix_is_kept_and_only_the_rest_is_decoded(vocab_model):
    s = make(vocab_model)
    prompt = list(range(100, 140))
    submit(s, prompt, max_tokens=3)
    drain(s)
    again = prompt[:30] + [7, 8, 9]
    request, _ = submit(s, again, max_tokens=1)
    s.step()
    assert s.runner.trims[-1] == (0, 30)  # the slot's memory cut right after the shared prefix
    assert s.runner.decoded[-1][0][:3] == (0, 30, [7, 8, 9])
    assert request.seq.usage.cached_tokens == 30
    assert s.runner.memory[0][:30] == prompt[:30]


def test_the_same_prompt_again_leaves_its_last_token_to_decode(vocab_model):
    s = make(vocab_model)
    prompt = list(range(100, 140))
    submit(s, prompt, max_tokens=1)
    drain(s)
    request, _ = submit(s, prompt, max_tokens=1)
    s.step()
    assert s.runner.decoded[-1][0][:3] == (0, 39, [139])  # its logits choose the first token
    assert request.seq.usage.cached_tokens == 39


def test_a_slot_sharing_only_a_token_is_not_reused_when_an_empty_one_is_free(vocab_model):
    s = make(vocab_model, 2)
    submit(s, [1] + list(range(200, 240)), max_tokens=1)
    drain(s)
    submit(s, [1] + list(range(300, 340)), max_tokens=1)
    s.step()
    assert s.runner.decoded[-1][0][0] == 1  # the empty slot; the first slot's cache survives
    assert s.slots[0].cache.tokens[:41] == [1] + list(range(200, 240))


# --- cancellation ---------------------------------------------------------------------------------------


def test_cancelling_mid_prompt_frees_the_slot_before_the_next_step(vocab_model):
    s = make(vocab_model, n_batch=8)
    request, events = submit(s, list(range(1, 30)))
    s.step()  # 8 of 29 prompt tokens read
    request.cancel()
    waiting, waiting_events = submit(s, [5, 6, 7], max_tokens=1)
    s.step()
    assert done(events).finish_reason == "cancelled" and not tokens(events)
    assert [seq for seq, *_ in s.runner.decoded[-1]] == [0]
    assert s.runner.decoded[-1][0][2] == [5, 6, 7]  # the slot went to the next request at once
    drain(s)
    assert tokens(waiting_events) == CYCLE[:1]


def test_cancelling_mid_generation_ends_the_stream_with_what_it_had(vocab_model):
    s = make(vocab_model, 2)
    request, events = submit(s, [1, 2, 3], max_tokens=50)
    _, other = submit(s, [4, 5, 6], max_tokens=6)
    for _ in range(4):
        s.step()
    request.cancel()
    drain(s)
    assert tokens(events) == CYCLE[:4]
    assert done(events).finish_reason == "cancelled" and done(events).usage.completion_tokens == 4
    assert done(other).finish_reason == "length" and tokens(other) == CYCLE[:6]


def test_a_request_cancelled_while_waiting_never_takes_a_slot(vocab_model):
    s = make(vocab_model)
    submit(s, [1, 2, 3], max_tokens=3)
    request, events = submit(s, [4, 5, 6])
    request.cancel()
    drain(s)
    assert done(events).finish_reason == "cancelled"
    assert all(chunk[0] == 0 and chunk[2] != [4, 5, 6] for decode in s.runner.decoded for chunk in decode)


# --- LoRA grouping --------------------------------------------------------------------------------------


def test_a_step_decodes_once_per_adapter_set_and_batches_requests_of_one_set(vocab_model):
    s = make(vocab_model, 4)
    a, b = FakeAdapter(1), FakeAdapter(2)
    submit(s, [1, 2], lora=[(a, 1.0)])
    submit(s, [3, 4])
    submit(s, [5, 6], lora=[(a, 1.0)])
    submit(s, [7, 8], lora=[(b, 0.5)])
    s.step()
    step = s.runner.decoded
    assert len(step) == 3  # one decode per set in use
    sets = [{chunk[3] for chunk in decode} for decode in step]
    assert all(len(found) == 1 for found in sets)  # never two sets in one decode
    assert [sorted(chunk[0] for chunk in decode) for decode in step] == [[1], [0, 2], [3]]  # base (current) first
    s.step()
    assert [decode[0][3] for decode in s.runner.decoded[3:]][0] == ((b, 0.5),)  # the current set first again


def test_a_cached_prefix_is_never_reused_under_another_adapter_set(vocab_model):
    s = make(vocab_model)
    prompt = list(range(100, 140))
    submit(s, prompt, max_tokens=1)
    drain(s)
    request, _ = submit(s, prompt, max_tokens=1, lora=[(FakeAdapter(3), 1.0)])
    s.step()
    assert s.runner.trims[-1] == (0, 0) and request.seq.usage.cached_tokens == 0


# --- speculation ----------------------------------------------------------------------------------------


def test_refused_draft_positions_are_trimmed_and_the_cache_stays_exact(vocab_model):
    s = make(vocab_model, rule=breaking_rule(vocab_model.vocab.n_vocab), speculation=Speculation(draft_max=8))
    plain = make(vocab_model, rule=breaking_rule(vocab_model.vocab.n_vocab))
    prompt = CYCLE * 2
    _, events = submit(s, prompt, max_tokens=40)
    _, expected = submit(plain, prompt, max_tokens=40)
    drain(s)
    drain(plain)
    assert tokens(events) == tokens(expected)  # drafts verified: the target's tokens exactly
    assert 0 < s.stats.draft_accepted < s.stats.draft_tokens
    verify = [(pos, len(toks)) for decode in s.runner.decoded for _, pos, toks, _ in decode if len(toks) > 1][1:]
    assert verify, "no verify chunk"
    admission, *refusals = s.runner.trims
    assert admission == (0, 0) and refusals
    for _, keep in refusals:  # each cut lies inside a verify chunk, past its last token (kept)
        assert any(pos < keep < pos + n for pos, n in verify)
    assert s.runner.memory[0] == s.slots[0].cache.tokens


# --- failures -------------------------------------------------------------------------------------------


def test_a_failed_decode_ends_exactly_the_requests_of_its_batch(vocab_model):
    s = make(vocab_model, 3)
    a = FakeAdapter(4)
    _, base_events = submit(s, [1, 2, 3], max_tokens=5)
    _, tuned1 = submit(s, [4, 5, 6], max_tokens=5, lora=[(a, 1.0)])
    _, tuned2 = submit(s, [7, 8, 9], max_tokens=5, lora=[(a, 1.0)])
    s.step()  # two decodes: the base set's, then the adapter's (now the runner's current set)
    s.runner.fail_next = ContextFullError("no room in the KV cache", 1)  # the adapter's decode: current, so first
    s.step()
    for events in (tuned1, tuned2):
        assert isinstance(done(events).error, ContextFullError) and len(tokens(events)) == 1
    assert (1, 0) in s.runner.trims and (2, 0) in s.runner.trims  # their memory is unknown: forgotten
    assert s.runner.memory[1] == s.runner.memory[2] == []
    drain(s)
    assert done(base_events).finish_reason == "length" and tokens(base_events) == CYCLE[:5]


def test_fail_waiting_ends_the_queue_and_fail_all_the_slots(vocab_model):
    s = make(vocab_model)
    _, running = submit(s, [1, 2, 3], max_tokens=50)
    _, waiting = submit(s, [4, 5, 6])
    s.step()
    s.fail_waiting(RuntimeError("shutting down"))
    assert str(done(waiting).error) == "shutting down" and not s.waiting
    s.fail_all(RuntimeError("closed"))
    assert str(done(running).error) == "closed" and not s.has_work
    assert s.runner.memory[0] == []
