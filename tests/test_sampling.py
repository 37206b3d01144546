"""Samplers and processors: exact distributions, cut-offs, filters, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helios_core import sampling
from helios_core.sampling import SamplingState


def state(seed: int = 0, tokens=(), n_prompt: int = 0) -> SamplingState:
    return SamplingState(np.asarray(tokens, dtype=np.int32), np.random.default_rng(seed), 0, n_prompt)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def chi_square_p_value(observed: np.ndarray, expected: np.ndarray) -> float:
    """Upper-tail p of Pearson's chi-square, bins with expected < 5 pooled (Wilson-Hilferty)."""
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = obs.size - 1
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def draw(sampler, logits, n: int, seed: int = 0) -> np.ndarray:
    s = state(seed)
    return np.bincount([sampler(logits, s) for _ in range(n)], minlength=logits.size)


LOGITS = np.random.default_rng(7).normal(0, 2.5, 200).astype(np.float32)


@pytest.mark.parametrize("temperature", [0.5, 0.8, 1.7])
def test_temperature_sampling_matches_softmax_in_distribution(temperature):
    n = 20_000
    counts = draw(sampling.make_sampler(temperature), LOGITS, n)
    expected = n * softmax(LOGITS.astype(np.float64) / temperature)
    assert chi_square_p_value(counts, expected) > 1e-3


def test_top_k_keeps_exactly_the_k_best_and_their_relative_odds():
    n, k, t = 10_000, 5, 1.0
    counts = draw(sampling.make_sampler(t, top_k=k), LOGITS, n)
    best = np.argsort(LOGITS)[-k:]
    assert set(np.flatnonzero(counts)) <= set(best)
    expected = np.zeros_like(LOGITS, dtype=np.float64)
    expected[best] = softmax(LOGITS[best].astype(np.float64))
    assert chi_square_p_value(counts[best], n * expected[best]) > 1e-3


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    counts = draw(sampling.make_sampler(1.0, top_p=0.8), logits, 20_000)
    # 0.5 + 0.3 reaches 0.8: only the first two tokens, in the ratio 5:3.
    assert counts[2] == counts[3] == 0
    assert chi_square_p_value(counts[:2], 20_000 * np.array([0.625, 0.375])) > 1e-3


def test_top_p_nucleus_wider_than_the_first_guess():
    weights = np.ones(5000)  # uniform: the nucleus of 0.9 is exactly 4500 tokens
    ids, kept = sampling._nucleus(np.arange(5000), weights.astype(np.float32), 0.9)
    assert ids.size == 4500 and kept.size == 4500


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    probs = np.array([0.4, 0.3, 0.2, 0.06, 0.04])
    counts = draw(sampling.make_sampler(1.0, min_p=0.12), np.log(probs).astype(np.float32), 20_000)
    # 0.12 * 0.4 = 0.048: token 4 (0.04) is out, token 3 (0.06) stays.
    assert counts[4] == 0 and counts[3] > 0


def test_temperature_zero_is_greedy():
    assert sampling.make_sampler(0.0) is sampling.greedy
    assert sampling.greedy(LOGITS, state()) == int(np.argmax(LOGITS))


def test_the_cutoff_drops_only_tokens_without_float_probability():
    logits = np.full(262_144, -1000.0, dtype=np.float32)
    logits[:4] = [10.0, 9.0, -9.0, -11.0]  # 19 below the best: kept; 21 below: weight e^-21, dropped
    ids, weights = sampling._candidates(logits, 1.0, sampling.CUTOFF, 0)
    assert sorted(ids.tolist()) == [0, 1, 2]
    assert weights.dtype == np.float32 and weights.max() == 1.0


def test_same_seed_same_tokens_different_seed_different_tokens():
    sampler = sampling.make_sampler(1.0)
    a = [sampler(LOGITS, s) for s in [state(42)] for _ in range(50)]
    b = [sampler(LOGITS, s) for s in [state(42)] for _ in range(50)]
    c = [sampler(LOGITS, s) for s in [state(43)] for _ in range(50)]
    assert a == b and a != c


@pytest.mark.parametrize("size", [300, 3000], ids=["one-cumsum", "blocks"])
def test_draw_is_exact(size):
    weights = (np.random.default_rng(1).random(size) ** 4).astype(np.float32)
    rng = np.random.default_rng(2)
    counts = np.bincount([sampling._draw(weights, rng) for _ in range(40_000)], minlength=size)
    assert chi_square_p_value(counts, 40_000 * weights.astype(np.float64) / weights.sum(dtype=np.float64)) > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature must be >= 0.0"),
        ({"temperature": 1, "top_p": -0.5}, "top_p must be in"),
        ({"temperature": 1, "top_p": 1.5}, "top_p must be in"),
        ({"temperature": 1, "min_p": 2.0}, "min_p must be in"),
        ({"temperature": 1, "top_k": -1}, "top_k must be >= 0"),
    ],
)
def test_invalid_settings_name_their_bound(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.make_sampler(**kwargs)


def test_top_p_zero_is_the_smallest_nucleus_greedy():
    assert sampling.make_sampler(temperature=1.0, top_p=0.0) is sampling.greedy


def test_repetition_penalty_lowers_seen_tokens_either_sign():
    logits = np.array([2.0, -2.0, 1.0, 0.5], dtype=np.float32)
    out = sampling.make_repetition_penalty(2.0)(logits, state(tokens=[0, 1, 1]))
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0, 0.5])
    assert logits[0] == 2.0  # the input is never written


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    logits = np.zeros(4, dtype=np.float32)
    process = sampling.make_presence_frequency_penalty(presence=0.5, frequency=0.25)
    out = process(logits, state(tokens=[3, 3, 1, 1, 1, 2], n_prompt=2))  # prompt [3, 3]
    np.testing.assert_allclose(out, [0.0, -(0.5 + 0.75), -(0.5 + 0.25), 0.0])


def test_logit_bias_adds_per_token():
    out = sampling.make_logit_bias({1: -100.0, 2: 5.0})(np.zeros(3, dtype=np.float32), state())
    np.testing.assert_allclose(out, [0.0, -100.0, 5.0])


def test_logprobs_are_a_log_softmax_with_sorted_alternatives():
    lp, top = sampling.logprobs(LOGITS, 3, top_n=4)
    reference = np.log(softmax(LOGITS.astype(np.float64)))
    assert lp == pytest.approx(reference[3], abs=1e-5)
    assert [t.token for t in top] == np.argsort(reference)[::-1][:4].tolist()
    assert [t.logprob for t in top] == pytest.approx(np.sort(reference)[::-1][:4], abs=1e-5)


def test_logprobs_of_a_processed_row_never_list_a_banned_token():
    row = np.array([2.0, -np.inf, 1.0, -np.inf], dtype=np.float32)
    lp, top = sampling.logprobs(row, 0, top_n=4)
    assert [t.token for t in top] == [0, 2]  # the banned ones have no probability to list
    assert lp == pytest.approx(2.0 - np.logaddexp(2.0, 1.0), abs=1e-6)
    # A banned token chosen anyway (a custom sampler may) reports vLLM's floor: JSON has no -inf.
    assert sampling.logprobs(row, 1)[0] == -9999.0


def test_logits_mode_reports_the_row_unnormalised():
    lp, top = sampling.logprobs(LOGITS, 3, top_n=2, normalise=False)
    assert lp == LOGITS[3]
    assert [t.logprob for t in top] == sorted(LOGITS.tolist(), reverse=True)[:2]


# --- inputs that once hung the engine thread or crashed it -------------------------


def test_a_temperature_too_small_for_float32_is_greedy_not_a_hang():
    sampler = sampling.make_sampler(1e-40, top_p=0.5)
    assert sampler is sampling.greedy
    assert sampler(LOGITS, state()) == int(np.argmax(LOGITS))


@pytest.mark.parametrize("sampler", [sampling.greedy, sampling.make_sampler(0.8, top_p=0.9)], ids=["greedy", "top-p"])
def test_nan_logits_are_a_clear_error(sampler):
    logits = LOGITS.copy()
    logits[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler(logits, state())


def test_all_minus_inf_logits_are_a_clear_error():
    with pytest.raises(ValueError, match="-inf"):
        sampling.make_sampler(1.0)(np.full(10, -np.inf, dtype=np.float32), state())


def test_plus_inf_logits_win_outright():
    logits = LOGITS.copy()
    logits[[4, 9]] = np.inf
    picks = {sampling.make_sampler(1.0, top_p=0.9)(logits, s) for s in [state(1)] for _ in range(50)}
    assert picks == {4, 9}


def test_the_nucleus_search_widens_down_to_tiny_weights_and_ends():
    weights = np.array([1.0] + [1e-9] * 1000, dtype=np.float32)  # top_p = 1 needs every one of them
    ids, kept = sampling._nucleus(np.arange(1001), weights, 1.0)
    assert ids.size == 1001
