"""Backend sampling (helios_core.sampling.backend): which chains take it, and that it draws what Python draws."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from helios_core.context import Context
from helios_core.engine import Done, Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.generate import GenerationParams, Generator
from helios_core.sampling import SamplingState, make_sampler
from helios_core.sampling.backend import BackendChain, chain_for
from tests.conftest import THREADS

PROMPT = "The three primary colors are"


def _chain(**kw) -> BackendChain | None:
    params = GenerationParams(**kw)
    return chain_for(params, params.build_sampler(), params.build_processors())


@pytest.mark.parametrize(
    "settings",
    [{"temperature": 0.0}, {"top_k": 1, "temperature": 0.7}, {"temperature": 0.0, "top_p": 0.5, "min_p": 0.1}],
)
def test_greedy_chains_take_the_backend_path(settings):
    assert _chain(**settings) == BackendChain()


def test_a_top_k_chain_takes_the_backend_path_with_its_settings_and_seed():
    got = _chain(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, seed=7)
    assert got == BackendChain(0.8, 40, 0.9, 0.05, 7)


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.8, "top_p": 0.95},  # no bound before the draw: a float32 cumsum over the vocabulary
        {"temperature": 1.0},  # a full draw must not be truncated
        {"temperature": 0.8, "top_k": 4096},  # above MAX_TOP_K
        {"temperature": 0.8, "top_k": 40, "typical_p": 0.9},
        {"temperature": 0.8, "top_k": 40, "top_n_sigma": 1.0},
        {"temperature": 0.8, "top_k": 40, "xtc_probability": 0.5},
        {"temperature": 0.8, "top_k": 40, "mirostat": 2},
        {"temperature": 0.0, "repetition_penalty": 1.1},
        {"temperature": 0.0, "logit_bias": {1: -100.0}},
        {"temperature": 0.0, "dry_multiplier": 0.8},
        {"temperature": 0.0, "logprobs": True},
        {"temperature": 0.0, "prompt_logprobs": 2},
        {"temperature": 0.0, "processors": [lambda logits, state: logits]},
        {"sampler": lambda logits, state: 0},
        {"batch_sampler": lambda rows, states: [0] * len(rows)},
    ],
)
def test_chains_that_need_the_row_keep_the_python_path(settings):
    assert _chain(**settings) is None


def test_greedy_on_the_backend_equals_greedy_in_python_while_the_margin_is_wide(model):
    rows: list[np.ndarray] = []
    capture = GenerationParams(max_tokens=24, temperature=0.0, processors=[lambda x, s: rows.append(x.copy()) or x])
    with Generator(model, n_ctx=256, n_threads=THREADS) as python_path:
        reference = [step.token for step in python_path.generate(PROMPT, capture)]
    with Generator(model, n_ctx=256, n_threads=THREADS, backend_sampling=True) as generator:
        generation = generator.generate(PROMPT, GenerationParams(max_tokens=24, temperature=0.0))
        got = [step.token for step in generation]
        assert generator.scheduler.slots[0].sampler is None  # taken off the sequence at the end
    assert generation.request.backend == BackendChain()
    for row, want, have in zip(rows, reference, got, strict=False):
        if have != want:  # the paths may part only at a near tie; nothing after it compares
            second, first = np.sort(row)[-2:]
            assert first - second < 0.1
            break
    assert got[:1] == reference[:1]


def test_a_seeded_backend_run_repeats_itself(model):
    params = GenerationParams(max_tokens=12, temperature=1.2, top_k=20, seed=11)
    with Generator(model, n_ctx=256, n_threads=THREADS, backend_sampling=True) as generator:
        first = [step.token for step in generator.generate(PROMPT, params)]
        second = [step.token for step in generator.generate(PROMPT, params)]
    assert first == second


# Chi-square at 0.1% for 2..5 degrees of freedom: a fixed seed set fails it only if the paths differ.
_CRITICAL = {2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}


@pytest.mark.parametrize(
    "settings", [{"temperature": 2.5, "top_k": 4}, {"temperature": 3.0, "top_k": 6, "top_p": 0.9, "min_p": 0.05}]
)
def test_the_backend_draws_the_python_chains_distribution(model, settings):
    """Many one-token draws of one prompt, eight sequences a decode, against the Python chain's probabilities."""
    slots, draws = 8, 320
    ctx = Context(model, n_ctx=128 * slots, n_seq_max=slots, n_batch=256, n_threads=THREADS)
    try:
        scheduler = Scheduler(LlamaRunner(ctx), n_ctx_per_seq=128, backend_sampling=True)
        tokens = model.vocab.tokenize(PROMPT)
        drawn: deque = deque()
        requests = [
            Request(tokens, GenerationParams(max_tokens=1, seed=seed, **settings), drawn.append)
            for seed in range(draws)
        ]
        _run(scheduler, requests)
        assert all(request.backend is not None for request in requests)
        # The rows of the batch shape most draws had (every slot caching the prompt, all in one decode):
        # llama.cpp's logits move a little with it, enough to swap two near-tied tokens at the cut.
        rows: list[np.ndarray] = []
        capture = GenerationParams(max_tokens=1, processors=[lambda x, s: rows.append(x.copy()) or x], **settings)
        _run(scheduler, [Request(tokens, capture, lambda event: None) for _ in range(slots)])
        chain = make_sampler(**settings).distribution(rows[0], SamplingState(np.array(tokens), None))
        expected = dict(zip(chain.ids.tolist(), chain.probs().tolist(), strict=True))
    finally:
        ctx.close()
    counts: dict[int, int] = {}
    for event in drawn:
        if not isinstance(event, Done):
            counts[event.token] = counts.get(event.token, 0) + 1
    assert set(counts) <= set(expected)
    chi2 = sum((counts.get(t, 0) - draws * p) ** 2 / (draws * p) for t, p in expected.items())
    assert chi2 < _CRITICAL[len(expected) - 1]


def _run(scheduler: Scheduler, requests: list[Request]) -> None:
    for request in requests:
        scheduler.submit(request)
    while scheduler.has_work:
        scheduler.step()


def test_by_default_greedy_stays_in_python_where_the_logits_are_on_the_cpu_and_top_k_does_not(model):
    assert not model.gpu_output  # the suite's model is loaded with no GPU layers
    with Generator(model, n_ctx=256, n_threads=THREADS) as generator:
        plain = generator.generate(PROMPT, GenerationParams(max_tokens=2, temperature=0.0))
        top_k = generator.generate(PROMPT, GenerationParams(max_tokens=2, temperature=0.8, top_k=40, seed=1))
        assert len(list(plain)) == len(list(top_k)) == 2
    assert plain.request.backend is None
    assert top_k.request.backend == BackendChain(0.8, 40, seed=1)
