"""Speculative decoding: drafters, the acceptance rule, adaptive k, and the scheduler's verify chunks.

Most of it runs on scripted logits (tests/scripted_runner.py: no weights, batch-invariant rows),
where speculative and plain decoding must agree token for token. On the real model they
agree up to near-ties, which the last tests check against the documented tolerance.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from pathlib import Path

import httpx
import numpy as np
import pytest

from helios_core.engine import Done, Engine, Request, Scheduler
from helios_core.generate import GenerationParams, Generator
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_core.sampling import Candidates, make_sampler
from helios_core.sequence import Step
from helios_core.speculative import (
    AcceptanceRates,
    DraftModel,
    PromptLookup,
    SlotAcceptance,
    Speculation,
    StepCost,
    accept_drafted,
    allocate,
    can_verify,
    check_same_vocabulary,
    evidence_bucket,
)
from tests.conftest import LOGIT_TOLERANCE, THREADS, teacher_forced
from tests.scripted_runner import ScriptedRunner, peaked
from tests.server_process import ServerProcess

GREEDY = dict(temperature=0.0)


# --- prompt lookup -------------------------------------------------------------------------------


def tokens(*ids: int) -> np.ndarray:
    return np.array(ids, dtype=np.int32)


def test_prompt_lookup_copies_what_followed_the_latest_match_of_the_last_tokens():
    text = tokens(1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 6, 2, 3)
    # (2, 3) occurred twice before; the latest is followed by 7, 8.
    assert PromptLookup(ngram_max=2, ngram_min=2).propose(text, 2).tolist() == [7, 8]


def test_prompt_lookup_prefers_the_longest_match():
    text = tokens(1, 2, 3, 4, 5, 9, 2, 3, 6, 1, 2, 3)
    # (1, 2, 3) matches at the start (then 4, 5); (2, 3) alone matches later (then 6).
    assert PromptLookup(ngram_max=3, ngram_min=2).propose(text, 2).tolist() == [4, 5]


def test_prompt_lookup_drafts_nothing_without_a_match_or_room():
    assert PromptLookup().propose(tokens(1, 2, 3, 4, 5, 6), 4).size == 0
    assert PromptLookup().propose(tokens(1, 2, 1, 2), 0).size == 0
    assert PromptLookup().propose(tokens(7), 4).size == 0


def test_prompt_lookup_continues_a_repeating_text_past_its_end():
    # The latest match of (1, 2) is 3 tokens back: the period-3 text goes on repeating.
    text = tokens(1, 2, 3, 1, 2, 3, 1, 2)
    assert PromptLookup(ngram_max=2).propose(text, 7).tolist() == [3, 1, 2, 3, 1, 2, 3]


def test_prompt_lookup_reports_how_much_of_the_text_matched():
    copied = list(range(10, 40))
    text = tokens(1, *copied, 2, *copied[:12])
    draft, matched = PromptLookup().lookup(text, 5)
    assert draft.tolist() == copied[12:17]
    assert matched == 12  # the 2 before the copy stops the match
    assert PromptLookup(ngram_max=8).lookup(text, 5)[1] == 8


# --- how much to draft -----------------------------------------------------------------------------


def test_step_cost_charges_whole_groups_of_rows_less_than_the_rows_left_over():
    cost = StepCost()
    assert cost(1) == 1.0 and cost(2) == 2.0
    assert cost(8) < cost(5) < cost(9)  # a row beside whole groups costs about a pass of its own
    assert cost(16) / 16 < cost(4) / 4 < cost(1)  # rows in groups share the passes over the head


def test_a_sequence_alone_drafts_nothing_when_drafts_do_not_pay():
    cost = StepCost()
    assert cost.best_length(0.3, 32) == 0
    assert allocate([(32, 0.3)], 1, 64, cost) == [0]


def test_a_sequence_alone_drafts_longer_the_likelier_its_drafts_are_kept_and_fills_whole_groups():
    cost = StepCost()
    lengths = [cost.best_length(a, 32) for a in (0.8, 0.95, 0.99)]
    assert 0 < lengths[0] < lengths[1] < lengths[2]
    assert all((1 + k) % cost.quantum == 0 for k in lengths)  # a chunk of whole groups of rows


def test_allocate_gives_drafted_tokens_to_the_likelier_sequence_and_respects_each_offer_and_the_budget():
    cost = StepCost()
    assert allocate([(8, 0.2), (8, 0.97)], 2, 64, cost) == [0, 6]  # 8 rows in all
    assert allocate([(2, 0.97), (8, 0.97)], 2, 64, cost)[0] <= 2
    assert sum(allocate([(32, 0.99), (32, 0.99)], 2, 10, cost)) <= 10


def test_two_generating_sequences_draft_cheap_rows_that_a_lone_sequence_would_not():
    # Two rows cost two plain steps; two drafted rows more make a whole group for little more.
    cost = StepCost()
    assert allocate([(8, 0.5)], 1, 64, cost) == [0]
    assert sum(allocate([(8, 0.5), (8, 0.5)], 2, 64, cost)) == 2


def test_a_slots_refused_drafts_stop_its_drafting_and_it_tries_again_later():
    record = SlotAcceptance()
    shared = 0.9
    assert StepCost().best_length(record.rate(shared), 32) > 0
    for _ in range(3):
        record.record(8, 0)
    assert StepCost().best_length(record.rate(shared), 32) == 0
    steps = 0
    while StepCost().best_length(record.rate(shared), 32) == 0:
        steps += 1
    assert 3 < steps < 40


def test_acceptance_rates_learn_per_bucket_of_evidence_and_kind_of_request():
    rates = AcceptanceRates()
    long_greedy = (True, evidence_bucket(40))
    short_greedy = (True, evidence_bucket(2))
    before = rates.rate(long_greedy), rates.rate(short_greedy)
    sampled_before = rates.rate((False, evidence_bucket(40)))
    for _ in range(50):
        rates.record(long_greedy, 16, 16)
        rates.record(short_greedy, 4, 0)
    assert rates.rate(long_greedy) > max(before[0], 0.99)
    assert rates.rate(short_greedy) < min(before[1], 0.1)
    assert rates.rate((False, evidence_bucket(40))) == sampled_before  # sampled requests keep their own


# --- the acceptance rule ---------------------------------------------------------------------------

# The 0.1% critical values of chi-square, by degrees of freedom: a correct rule fails one seed in a thousand.
CHI2_999 = {3: 16.27, 4: 18.47, 5: 20.52}


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("drafted", [10, 13, 14, 99], ids=["likely", "unlikely", "rare", "impossible"])
def test_the_acceptance_rule_draws_exactly_the_samplers_distribution(drafted):
    # A slice of five tokens: whatever is drafted, the kept token is distributed as p.
    ids = np.array([10, 11, 12, 13, 14])
    p = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
    c = Candidates(ids, (p / p.max()).astype(np.float32))
    rng = np.random.default_rng(1234)
    draws = np.array([accept_drafted(c, drafted, rng) for _ in range(20_000)])
    counts = np.array([(draws == t).sum() for t in ids])
    assert counts.sum() == draws.size
    assert chi_square(counts, p) < CHI2_999[4]


def test_the_acceptance_rule_through_a_built_in_sampler_on_scripted_logits():
    # The sampler's own distribution (temperature 0.9, top-k 4) on a row with six live tokens.
    sampler = make_sampler(0.9, top_k=4)
    assert can_verify(sampler)
    row = peaked(32, {3: 2.0, 5: 1.5, 7: 1.2, 9: 0.3, 11: -0.5, 13: -1.0})
    state = type("State", (), {"rng": None})()
    c = sampler.distribution(row, state)
    assert sorted(c.ids.tolist()) == [3, 5, 7, 9]  # top-k cut
    probs = dict(zip(c.ids.tolist(), c.probs().tolist(), strict=True))
    rng = np.random.default_rng(99)
    draws = np.array([accept_drafted(c, 5, rng) for _ in range(20_000)])
    counts = np.array([(draws == t).sum() for t in probs])
    assert counts.sum() == draws.size  # nothing outside the cut
    assert chi_square(counts, np.array(list(probs.values()))) < CHI2_999[3]


def test_samplers_without_a_distribution_are_not_verified():
    assert can_verify(make_sampler(0.0)) and can_verify(make_sampler(0.7, top_p=0.9, min_p=0.05))
    assert not can_verify(make_sampler(0.8, mirostat=2))  # keeps state from token to token
    assert not can_verify(make_sampler(0.8, xtc_probability=0.5))  # its cut is itself random
    assert not can_verify(lambda logits, state: 0)


# --- the scheduler on scripted logits --------------------------------------------------------------

# A text of 12 distinct ordinary tokens that the scripted model repeats, except that every
# seventh position it says BREAK instead: prompt lookup drafts well and is refused at times.
CYCLE = [1000 + 17 * i for i in range(12)]
BREAK = 4242


@pytest.fixture(scope="module")
def vocab_model():
    with Model(default_model_path(), vocab_only=True) as m:
        yield m


def cyclic_rule(n_vocab: int):
    def rule(held: list[int]) -> np.ndarray:
        last = held[-1]
        after = CYCLE[(CYCLE.index(last) + 1) % len(CYCLE)] if last in CYCLE else CYCLE[0]
        if len(held) % 7 == 0:
            return peaked(n_vocab, {BREAK: 5.0, after: 4.0})
        return peaked(n_vocab, {after: 5.0, BREAK: 3.5})

    return rule


def run(scheduler: Scheduler, prompts, params) -> list[list]:
    sinks = [deque() for _ in prompts]
    for prompt, sink in zip(prompts, sinks, strict=True):
        scheduler.submit(Request(list(prompt), params, sink.append))
    while scheduler.has_work:
        scheduler.step()
    return [list(sink) for sink in sinks]


def scripted(vocab_model, slots: int, speculation=None) -> Scheduler:
    runner = ScriptedRunner(vocab_model, cyclic_rule(vocab_model.vocab.n_vocab), n_seq_max=slots)
    return Scheduler(runner, n_ctx_per_seq=512, speculation=speculation)


def generated(events) -> list[int]:
    return [e.token for e in events if isinstance(e, Step)]


PROMPTS = [CYCLE * 2, CYCLE[3:] + CYCLE, [BREAK] + CYCLE[:5], CYCLE[::-1] + CYCLE]


def test_greedy_speculation_gives_plain_greedy_tokens_in_fewer_steps(vocab_model):
    params = GenerationParams(max_tokens=60, **GREEDY)
    plain = scripted(vocab_model, 1)
    fast = scripted(vocab_model, 1, Speculation(draft_max=8))
    expected = generated(run(plain, PROMPTS[:1], params)[0])
    events = run(fast, PROMPTS[:1], params)[0]
    assert generated(events) == expected
    assert len(expected) == 60
    stats = fast.stats
    assert 0 < stats.draft_accepted < stats.draft_tokens  # drafts were both kept and refused
    assert stats.steps < plain.stats.steps
    done = events[-1]
    assert isinstance(done, Done) and done.timings.draft_tokens == stats.draft_tokens
    assert done.timings.draft_accepted == stats.draft_accepted


def test_refused_positions_leave_the_memory_and_the_cache_exact(vocab_model):
    fast = scripted(vocab_model, 1, Speculation(draft_max=8))
    run(fast, PROMPTS[:1], GenerationParams(max_tokens=45, **GREEDY))
    slot = fast.slots[0]
    # The memory holds the prompt and every generated token but the last (decoded next, as in plain
    # decoding); the slot's cached tokens say exactly that. ScriptedRunner checked every position.
    assert fast.runner.memory[0] == slot.cache.tokens
    assert len(slot.cache.tokens) == len(PROMPTS[0]) + 45 - 1


def test_four_concurrent_speculating_requests_each_get_their_own_stream(vocab_model):
    params = GenerationParams(max_tokens=40, **GREEDY)
    alone = [generated(run(scripted(vocab_model, 1), [p], params)[0]) for p in PROMPTS]
    together = scripted(vocab_model, 4, Speculation(draft_max=8))
    streams = run(together, PROMPTS, params)
    for stream, expected in zip(streams, alone, strict=True):
        assert generated(stream) == expected  # nothing lost, nothing duplicated, nothing crossed
        assert isinstance(stream[-1], Done) and stream[-1].finish_reason == "length"
        assert stream[-1].usage.completion_tokens == 40
    assert together.stats.draft_accepted > 0
    assert max(together.runner.decodes) > 4  # verify chunks shared decodes


def test_a_request_that_opts_out_or_cannot_be_verified_decodes_plainly(vocab_model):
    params = [
        GenerationParams(max_tokens=20, speculative=False, **GREEDY),
        GenerationParams(max_tokens=20, sampler=lambda logits, state: int(np.argmax(logits))),
    ]
    for p in params:
        fast = scripted(vocab_model, 1, Speculation())
        events = run(fast, PROMPTS[:1], p)[0]
        assert len(generated(events)) == 20
        assert fast.stats.draft_tokens == 0


def test_drafts_stop_short_of_max_tokens_and_a_stop_ends_the_request_inside_a_draft(vocab_model):
    fast = scripted(vocab_model, 1, Speculation(draft_max=16))
    # A token of the cycle stops the request while later drafted tokens were verified beside it.
    params = GenerationParams(max_tokens=50, stop_token_ids=[CYCLE[4]], **GREEDY)
    events = run(fast, [CYCLE * 2], params)[0]
    plain = run(scripted(vocab_model, 1), [CYCLE * 2], params)[0]
    assert generated(events) == generated(plain)
    assert fast.stats.draft_tokens > fast.stats.draft_accepted  # the verify chunk went past the stop
    assert events[-1].finish_reason == "stop"
    assert fast.runner.memory[0] == fast.slots[0].cache.tokens
    short = scripted(vocab_model, 1, Speculation(draft_max=16))
    assert len(generated(run(short, [CYCLE * 2], GenerationParams(max_tokens=3, **GREEDY))[0])) == 3


def test_sampled_speculation_is_reproducible_with_a_seed(vocab_model):
    params = GenerationParams(max_tokens=40, temperature=0.9, seed=7)
    a = generated(run(scripted(vocab_model, 1, Speculation()), PROMPTS[:1], params)[0])
    b = generated(run(scripted(vocab_model, 1, Speculation()), PROMPTS[:1], params)[0])
    assert a == b and len(a) == 40


# --- the real model ------------------------------------------------------------------------------

# Thirty short prompts, most of them with something to copy, so drafts are made and judged.
COPY_PROMPTS = [
    *(f"{word}, {word}, {word}, {word}," for word in ("red", "apple", "seven", "Paris", "tree")),
    *(f"1. {a}\n2. {b}\n3. {a}\n4. {b}\n5." for a, b in (("cat", "dog"), ("up", "down"), ("yes", "no"))),
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n",
    "for i in range(10):\n    print(i)\nfor j in range(10):\n    print(j)\nfor k in range(10):\n",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Monday, Tuesday,",
    "A B C D E F G A B C D",
    "x = 1\ny = 2\nz = 3\nx = 1\ny =",
    "<ul>\n<li>one</li>\n<li>two</li>\n<li>three</li>\n<li>",
    "She sells sea shells by the sea shore. She sells",
    '{"name": "a", "id": 1}, {"name": "b", "id": 2}, {"name":',
    "To be or not to be, that is the question. To be or",
    "SELECT id FROM users; SELECT id FROM orders; SELECT",
    "one two three four one two three four one",
    "The capital of France is",
    "Once upon a time",
    "import numpy as np\nimport numpy as np\nimport",
    "Row, row, row your boat, gently down the stream. Row, row,",
    "aaa bbb ccc aaa bbb ccc aaa",
    "I think, therefore I am. I think,",
    "10, 20, 30, 40, 50, 60,",
    "hello world\nhello world\nhello",
    "North, South, East, West. North, South,",
    "if x:\n    pass\nif y:\n    pass\nif z:\n",
]


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


def _greedy_runs(model: Model, prompts: list[str], speculation: Speculation | None) -> tuple[list[list[int]], int, int]:
    """Each prompt's 16 greedy tokens, decoded 8 at a time; and the tokens drafted and accepted."""
    from helios_core.context import Context

    params = GenerationParams(max_tokens=16, **GREEDY)
    with Context(model, n_ctx=8 * 512, n_seq_max=8, n_batch=512, n_threads=THREADS) as ctx:
        engine = Engine(ctx, n_ctx_per_seq=512, speculation=speculation)
        try:
            generations = [engine.generate(prompt, params) for prompt in prompts]
            runs = [[step.token for step in generation] for generation in generations]
            return runs, engine.scheduler.stats.draft_tokens, engine.scheduler.stats.draft_accepted
        finally:
            engine.close()


# The first ten prompts in `make test`; all thirty in the slow set.
@pytest.mark.parametrize(
    "prompts", [pytest.param(COPY_PROMPTS[:10], id="10"), pytest.param(COPY_PROMPTS, id="30", marks=pytest.mark.slow)]
)
def test_greedy_speculation_on_the_model_equals_plain_greedy_up_to_near_ties(model, prompts):
    assert len(COPY_PROMPTS) == 30
    plain_runs, _, _ = _greedy_runs(model, prompts, None)
    fast_runs, drafted, accepted = _greedy_runs(model, prompts, Speculation())
    assert accepted > 3 * len(prompts) and drafted > accepted  # speculation was at work
    with Generator(model, n_ctx=512, n_threads=THREADS) as generator:
        for prompt, plain, fast in zip(prompts, plain_runs, fast_runs, strict=True):
            i = first_difference(plain, fast)
            if i is None:
                assert len(plain) == len(fast), prompt
                continue
            # Where they part, plain decoding's own row (one sequence, here) must hold the two choices
            # within the batch tolerance: a near-tie that a different batch shape may tip (README, Determinism).
            rows = []
            generator.generate(prompt, teacher_forced(plain[: i + 1], rows)).text()
            gap = abs(float(rows[i][plain[i]] - rows[i][fast[i]]))
            assert gap <= LOGIT_TOLERANCE, f"{prompt!r}: step {i} parts on tokens {gap:.2f} logits apart"


def test_the_engine_speculates_for_many_requests_at_once(model, no_eog):
    from helios_core.context import Context

    ctx = Context(model, n_ctx=4 * 512, n_seq_max=4, n_batch=256, n_threads=THREADS)
    engine = Engine(ctx, n_ctx_per_seq=512, speculation=Speculation())
    try:
        generations = [
            engine.generate(p, GenerationParams(max_tokens=30, logit_bias=no_eog, logprobs=True, **GREEDY))
            for p in COPY_PROMPTS[:4]
        ]
        for generation in generations:
            steps = list(generation)
            assert len(steps) == 30 == generation.usage.completion_tokens
            # The stream's pieces are the text of its tokens: none lost or repeated on the way.
            text = "".join(step.text for step in steps)
            assert text == model.vocab.detokenize([step.token for step in steps])
            assert all(step.logprob is not None and step.logprob <= 0 for step in steps)
        assert engine.scheduler.stats.draft_accepted > 0
    finally:
        engine.close()
        ctx.close()


def test_a_draft_model_must_share_the_vocabulary(model):
    foreign = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "models" / "ggml-vocab-gpt-2.gguf"
    with Model(foreign, vocab_only=True) as gpt2:
        with pytest.raises(ValueError, match="share the target's vocabulary"):
            check_same_vocabulary(gpt2, model)
    check_same_vocabulary(model, model)


def test_the_model_drafting_for_itself_is_mostly_accepted(model):
    drafter = DraftModel(model, 1, n_ctx_per_seq=512, n_threads=THREADS)
    try:
        prompt = COPY_PROMPTS[14]
        params = GenerationParams(max_tokens=20, **GREEDY)
        with Generator(model, n_ctx=512, n_threads=THREADS, speculation=Speculation(drafter, draft_max=4)) as g:
            generation = g.generate(prompt, params)
            fast = [step.token for step in generation]
        assert len(fast) == 20
        assert generation.timings.draft_tokens > 0
        # The same weights draft what they then verify: refusals only come from batch-shape near-ties.
        assert generation.timings.draft_accepted >= generation.timings.draft_tokens // 2
    finally:
        drafter.close()


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    # A server of its own, not the shared one: a server learns from its traffic how often drafts are kept,
    # and after other modules' requests it may rightly draft nothing for a while.
    proc = ServerProcess("--ctx-size", "512", "--parallel", "4")  # prompt lookup is the default
    yield proc
    proc.stop()


def completion(server, **body) -> dict:
    response = httpx.post(
        f"{server.url}/v1/completions", json={"max_tokens": 24, "temperature": 0, **body}, timeout=120
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_responses_carry_timings_with_drafts_and_a_request_can_opt_out(server):
    prompt = COPY_PROMPTS[14]
    drafted = completion(server, prompt=prompt)
    timings = drafted["timings"]
    assert timings["predicted_n"] == drafted["usage"]["completion_tokens"] == 24
    assert 0 < timings["draft_n_accepted"] <= timings["draft_n"]
    plain = completion(server, prompt=prompt, speculative=False)
    assert plain["timings"]["draft_n"] == plain["timings"]["draft_n_accepted"] == 0
    refused = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "speculative": "no"}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "speculative"
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    values = {
        name: float(value)
        for name, value in (line.split(" ") for line in text.splitlines() if line.startswith("helios_draft"))
    }
    assert values["helios_draft_tokens_total"] >= timings["draft_n"]
    assert 0 < values["helios_draft_acceptance_rate"] <= 1


def test_four_concurrent_streams_lose_and_repeat_nothing(server, model):
    async def stream(client, prompt: str) -> tuple[str, list[str], dict]:
        body = {
            "prompt": prompt,
            "max_tokens": 40,
            "temperature": 0.9,
            "seed": 3,
            "stream": True,
            "logprobs": 0,
            "stream_options": {"include_usage": True},
            "logit_bias": {str(t): -100 for t in model.vocab.eog_tokens},
        }
        text, pieces, usage, timings = [], [], None, None
        async with client.stream("POST", f"{server.url}/v1/completions", json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                usage = data.get("usage") or usage
                timings = data.get("timings") or timings
                for choice in data["choices"]:
                    text.append(choice["text"])
                    if choice["logprobs"]:
                        pieces.extend(choice["logprobs"]["tokens"])
        return "".join(text), pieces, {"usage": usage, "timings": timings}

    async def together():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(stream(client, p) for p in COPY_PROMPTS[:4]))

    for text, pieces, tail in asyncio.run(together()):
        assert len(pieces) == tail["usage"]["completion_tokens"] == 40  # one logprobs entry per token
        assert "".join(pieces) == text  # every token's text arrived once, in order
        assert tail["timings"]["predicted_n"] == 40
