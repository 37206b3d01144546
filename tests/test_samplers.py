"""The sampler toolkit: the candidate cut, each pure filter, DRY, mirostat, the fast path, adapters.

Filters are checked on small hand-built logits against probabilities worked
out by hand from their definitions (llama.cpp's samplers of the same name).
No test here needs model weights; every random draw is seeded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helios_core import Model
from helios_core.sampling import (
    Candidates,
    SamplingState,
    apply_min_p,
    apply_temperature,
    apply_top_k,
    apply_top_n_sigma,
    apply_top_p,
    apply_typical,
    apply_xtc,
    candidates,
    draw,
    dry_sequence_breakers,
    from_numpy_processor,
    from_transformers,
    make_dry_penalty,
    make_mirostat_v2,
    make_sampler,
    softmax,
)
from tests.conftest import VOCAB_MODELS


def state(seed: int = 0, tokens=(), n_prompt: int = 0) -> SamplingState:
    return SamplingState(np.asarray(tokens, dtype=np.int32), np.random.default_rng(seed), 0, n_prompt)


def cut(probs, temperature: float = 1.0) -> Candidates:
    """The candidate set of logits log(probs)."""
    return candidates(np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32), temperature)


def distribution(c: Candidates) -> dict[int, float]:
    return dict(zip(c.ids.tolist(), c.probs().tolist(), strict=True))


def assert_distribution(c: Candidates, expected: dict[int, float]) -> None:
    got = distribution(c)
    assert sorted(got) == sorted(expected)
    for token, p in expected.items():
        assert got[token] == pytest.approx(p, rel=1e-5)


# --- the cut and its helpers -----------------------------------------------------------


def test_candidates_are_the_tempered_softmax_restricted_to_the_cut():
    logits = np.array([2.0, 1.0, 0.0, -30.0], dtype=np.float32)  # -30 lies 32 below the best: cut
    c = candidates(logits, temperature=0.5)
    expected = softmax(np.array([2.0, 1.0, 0.0]) / 0.5)
    assert c.ids.tolist() == [0, 1, 2]
    assert c.weights.dtype == np.float32 and c.weights.max() == 1.0
    np.testing.assert_allclose(c.probs(), expected, rtol=1e-6)
    assert c.logits is logits  # kept as a view, for filters that need the whole row


def test_temperature_zero_leaves_the_best_token_lowest_id_on_a_tie():
    c = candidates(np.array([1.0, 3.0, 3.0, 2.0], dtype=np.float32), 0.0)
    assert c.ids.tolist() == [1] and c.probs().tolist() == [1.0]


def test_softmax_does_not_overflow():
    np.testing.assert_allclose(softmax(np.array([1000.0, 999.0])), [1 / (1 + math.e**-1), 1 / (1 + math.e)])


def test_draw_picks_by_weight_and_refuses_an_empty_set():
    c = Candidates(np.array([7, 9]), np.array([1.0, 3.0], dtype=np.float32))
    rng = np.random.default_rng(0)
    picks = np.array([draw(c, rng) for _ in range(4000)])
    assert set(picks.tolist()) == {7, 9}
    assert (picks == 9).mean() == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="empty"):
        draw(Candidates(np.array([], dtype=np.int64), np.array([], dtype=np.float32)), rng)


# --- each filter on its own --------------------------------------------------------------


def test_apply_temperature_sharpens_the_weights():
    c = apply_temperature(cut([0.5, 0.3, 0.2]), 0.5)
    expected = np.array([0.5, 0.3, 0.2]) ** 2
    assert_distribution(c, dict(enumerate(expected / expected.sum())))


def test_apply_temperature_zero_keeps_the_heaviest():
    assert apply_temperature(cut([0.2, 0.5, 0.3]), 0.0).ids.tolist() == [1]


def test_apply_top_k_keeps_the_k_best_in_their_order():
    c = apply_top_k(cut([0.1, 0.4, 0.2, 0.3]), 2)
    assert c.ids.tolist() == [1, 3]
    assert_distribution(c, {1: 4 / 7, 3: 3 / 7})
    assert apply_top_k(cut([0.1, 0.9]), 0).ids.tolist() == [0, 1]  # 0 is off


@pytest.mark.parametrize("p, kept", [(0.79, {0: 0.5, 1: 0.3}), (0.81, {0: 0.5, 1: 0.3, 2: 0.15})])
def test_apply_top_p_keeps_the_shortest_run_reaching_p(p, kept):
    c = apply_top_p(cut([0.5, 0.3, 0.15, 0.05]), p)
    total = sum(kept.values())
    assert_distribution(c, {t: q / total for t, q in kept.items()})


def test_apply_min_p_keeps_tokens_above_a_fraction_of_the_best():
    # 0.12 * 0.4 = 0.048: 0.06 stays, 0.04 goes.
    c = apply_min_p(cut([0.4, 0.3, 0.2, 0.06, 0.04]), 0.12)
    assert_distribution(c, {0: 0.4 / 0.96, 1: 0.3 / 0.96, 2: 0.2 / 0.96, 3: 0.06 / 0.96})


# probs 0.4, 0.3, 0.2, 0.1: entropy H = 1.2799 nats; surprises -ln p = 0.916, 1.204, 1.609, 2.303
# lie 0.364, 0.076, 0.329, 1.023 from H, so the ranking is token 1, 2, 0, 3 (cumulative 0.3, 0.5, 0.9, 1).
@pytest.mark.parametrize(
    "p, kept",
    [
        (0.25, {1: 1.0}),
        (0.35, {1: 0.6, 2: 0.4}),
        (0.6, {1: 1 / 3, 2: 2 / 9, 0: 4 / 9}),
        (0.95, {0: 0.4, 1: 0.3, 2: 0.2, 3: 0.1}),
    ],
)
def test_apply_typical_keeps_the_tokens_whose_surprise_is_nearest_the_entropy(p, kept):
    assert_distribution(apply_typical(cut([0.4, 0.3, 0.2, 0.1]), p), kept)


def test_apply_typical_passes_p_strictly_as_llama_cpp():
    # Ranking 1, 2, 0, 3 with cumulative 0.3, 0.5 ...: at p = 0.5 the run must pass 0.5, so token 0 joins.
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    assert sorted(apply_typical(cut(probs), 0.5 - 1e-6).ids.tolist()) == [1, 2]
    assert sorted(apply_typical(cut(probs), 0.5 + 1e-6).ids.tolist()) == [0, 1, 2]


def typical_reference(logits: np.ndarray, p: float) -> set[int]:
    """llama.cpp's typical sampler, written out plainly: sort by |surprise - entropy|, keep past p."""
    probs = softmax(logits)
    surprise = -np.log(probs)
    entropy = float((probs * surprise).sum())
    order = np.argsort(np.abs(surprise - entropy), kind="stable")
    end = int(np.searchsorted(np.cumsum(probs[order]), p, side="right")) + 1
    return set(order[:end].tolist())


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9, 0.95, 0.99])
def test_apply_typical_equals_the_plain_definition_on_random_rows(p):
    rng = np.random.default_rng(11)
    for _ in range(20):
        logits = rng.normal(0, rng.uniform(0.5, 4.0), 2000).astype(np.float32)
        c = candidates(logits, cutoff=1e4)
        assert set(apply_typical(c, p).ids.tolist()) == typical_reference(logits, p)
        # the same when the set's best weighs less than 1 (as after XTC): only ratios count
        assert set(apply_typical(c._replace(weights=c.weights * np.float32(0.3)), p).ids.tolist()) == typical_reference(
            logits, p
        )


def test_apply_top_n_sigma_keeps_logits_within_n_deviations_of_the_best():
    # mean 0.75, variance (3.25^2 + 1.25^2 + 6 * 0.75^2) / 8 = 1.9375, sigma 1.392
    logits = np.array([4.0, 2.0, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    assert apply_top_n_sigma(candidates(logits), 1.0).ids.tolist() == [0]  # 4 - 1.39 = 2.61 > 2
    c = apply_top_n_sigma(candidates(logits), 2.0)  # 4 - 2.78 = 1.22 < 2
    assert_distribution(c, {0: 1 / (1 + math.e**-2), 1: 1 / (1 + math.e**2)})


def test_apply_top_n_sigma_ignores_minus_inf_logits_in_the_deviation():
    logits = np.array([4.0, 2.0, 0, 0, 0, 0, 0, 0, -np.inf, -np.inf], dtype=np.float32)
    assert apply_top_n_sigma(candidates(logits), 2.0).ids.tolist() == [0, 1]


def test_apply_top_n_sigma_needs_the_row():
    with pytest.raises(ValueError, match="logits row"):
        apply_top_n_sigma(Candidates(np.arange(2), np.ones(2, dtype=np.float32)), 1.0)


def test_apply_xtc_drops_the_top_choices_but_the_least_likely_of_them():
    # 0.4 and 0.3 reach 0.25: 0.4 goes, 0.3 (the least likely of the two) stays.
    c = apply_xtc(cut([0.4, 0.3, 0.2, 0.1]), 0.25, 1.0, np.random.default_rng(0))
    assert_distribution(c, {1: 0.5, 2: 1 / 3, 3: 1 / 6})


def test_apply_xtc_needs_two_tokens_above_the_threshold():
    assert apply_xtc(cut([0.4, 0.3, 0.2, 0.1]), 0.35, 1.0, np.random.default_rng(0)).ids.tolist() == [0, 1, 2, 3]


def test_apply_xtc_acts_when_the_coin_says_so():
    probs = [0.4, 0.3, 0.2, 0.1]
    rng, coin = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(50):
        acted = apply_xtc(cut(probs), 0.25, 0.3, rng).ids.size == 3
        assert acted == (coin.random() <= 0.3)


# --- DRY ------------------------------------------------------------------------------------


DRY = {"multiplier": 0.8, "base": 1.75, "allowed_length": 2}


def dry(tokens, **kwargs) -> np.ndarray:
    process = make_dry_penalty(**{**DRY, **kwargs})
    return process(np.zeros(10, dtype=np.float32), state(tokens=tokens))


def test_dry_penalises_the_token_that_would_extend_a_repeat():
    # 0 1 2 3 0 1 2: the last three tokens occurred before, followed by 3. Emitting 3 would
    # make a 4-token repeat: 0.8 * 1.75 ** (3 - 2) = 1.4 off token 3, nothing else.
    expected = np.zeros(10, dtype=np.float32)
    expected[3] = -1.4
    np.testing.assert_allclose(dry([0, 1, 2, 3, 0, 1, 2]), expected, rtol=1e-6)


def test_dry_penalises_each_follower_by_its_own_repeat_and_leaves_short_ones():
    # 2 8 | 0 1 2 4 | 1 2 5 | 0 1 2: "0 1 2" was followed by 4 (a 3-token repeat: 1.4), "1 2" by 5
    # (2 tokens: 0.8), and "2" alone by 8 (1 token, under allowed_length: free).
    out = dry([2, 8, 0, 1, 2, 4, 1, 2, 5, 0, 1, 2])
    assert out[4] == pytest.approx(-1.4) and out[5] == pytest.approx(-0.8)
    assert np.count_nonzero(out) == 2


def test_dry_looks_only_at_the_last_penalty_last_n_tokens():
    # 0 1 2 3 0 1 2 seen through 6 tokens is 1 2 3 0 1 2: a 2-token repeat (0.8); through 5, none.
    assert dry([0, 1, 2, 3, 0, 1, 2], penalty_last_n=6)[3] == pytest.approx(-0.8)
    assert not dry([0, 1, 2, 3, 0, 1, 2], penalty_last_n=5).any()


@pytest.mark.parametrize(
    "breakers, penalty",
    [((), 0.8 * 1.75**2), (((5, 6),), 0.8), (((5,),), 0.8 * 1.75)],
    ids=["none", "two-token breaker", "one-token breaker"],
)
def test_dry_repeats_do_not_reach_back_across_a_sequence_breaker(breakers, penalty):
    # 5 6 1 2 3 5 6 1 2: a repeat of "5 6 1 2" (4) before 3; a breaker leaves only what follows it.
    out = dry([5, 6, 1, 2, 3, 5, 6, 1, 2], sequence_breakers=breakers)
    assert out[3] == pytest.approx(-penalty) and np.count_nonzero(out) == 1


def test_dry_never_penalises_a_single_token_breaker():
    # 1 2 7 1 2: the repeat "1 2" is followed by 7, which is itself a breaker.
    assert not dry([1, 2, 7, 1, 2], sequence_breakers=[(7,)]).any()
    assert dry([1, 2, 7, 1, 2])[7] == pytest.approx(-0.8)


def test_dry_leaves_logits_alone_without_a_repeat_and_never_writes_its_input():
    logits = np.zeros(10, dtype=np.float32)
    process = make_dry_penalty(**DRY)
    assert process(logits, state(tokens=[0, 1, 2, 3, 4])) is logits
    out = process(logits, state(tokens=[0, 1, 2, 3, 0, 1, 2]))
    assert out is not logits and not logits.any()


def dry_reference(tokens, multiplier, base, allowed_length, last_n) -> np.ndarray:
    """DRY without breakers, written out plainly: every earlier position, compared token by token."""
    window = list(tokens[-last_n:])
    n, longest = len(window), {}
    for j in range(n - 1):  # a repeat ending at j, which window[j + 1] would extend
        length = 0
        while length <= j and window[j - length] == window[n - 1 - length]:
            length += 1
        if length >= allowed_length and n > allowed_length:
            longest[window[j + 1]] = max(longest.get(window[j + 1], 0), length)
    out = np.zeros(10, dtype=np.float64)
    for token, length in longest.items():
        out[token] -= multiplier * base ** (length - allowed_length)
    return out


@pytest.mark.parametrize("last_n", [16, 64, 300])
def test_dry_equals_the_plain_definition_on_histories_that_loop(last_n):
    rng = np.random.default_rng(last_n)
    histories = [rng.integers(0, 4, 300) for _ in range(10)]  # four tokens: repeats everywhere
    histories += [np.tile(rng.integers(0, 10, period), 300 // period) for period in (1, 3, 7)]  # text in a loop
    process = make_dry_penalty(0.8, 1.1, 2, last_n)
    for tokens in histories:
        out = process(np.zeros(10, dtype=np.float32), state(tokens=tokens))
        np.testing.assert_allclose(out, dry_reference(tokens, 0.8, 1.1, 2, last_n), rtol=1e-5)


def test_dry_sequence_breakers_from_text_as_llama_cpp():
    with Model(VOCAB_MODELS / "ggml-vocab-gpt-2.gguf", vocab_only=True) as model:
        vocab = model.vocab
        newline, double_newline, colon = (vocab.tokenize(t, add_special=False)[0] for t in ("\n", "\n\n", ":"))
        sequences = dry_sequence_breakers(vocab, ["\n\n", ":"])
        assert dry_sequence_breakers(vocab, ("\n\n", ":")) is sequences  # derived once per vocabulary
    assert (double_newline,) in sequences and (colon,) in sequences  # tokens that contain a breaker
    assert (newline, newline) in sequences  # "\n" starts "\n\n", whose rest is "\n" again
    assert (newline,) not in sequences


# --- mirostat ---------------------------------------------------------------------------


def test_mirostat_keeps_tokens_under_mu_bits_and_moves_mu_by_the_surprise():
    # probs 0.5, 0.25, 0.125, 0.125: surprises 1, 2, 3, 3 bits. tau = 1 starts mu at 2: tokens 0 and 1
    # stay, renormalised to 2/3 and 1/3.
    logits = np.log(np.array([0.5, 0.25, 0.125, 0.125])).astype(np.float32)
    counts = np.zeros(4)
    for seed in range(3000):
        sampler = make_mirostat_v2(tau=1.0, eta=0.1)
        token = sampler(logits, state(seed))
        counts[token] += 1
        surprise = -math.log2({0: 2 / 3, 1: 1 / 3}[token])
        assert sampler.mu == pytest.approx(2.0 - 0.1 * (surprise - 1.0), rel=1e-6)
    assert counts[2] == counts[3] == 0
    assert counts[0] / 3000 == pytest.approx(2 / 3, abs=0.03)


def test_mirostat_state_belongs_to_one_request():
    rows = np.random.default_rng(3).normal(0, 3, (40, 500)).astype(np.float32)
    alone = make_mirostat_v2(3.0, 0.5)
    expected = [alone(row, s) for s in [state(1)] for row in rows]
    # Two requests interleaved, token by token, each with its own sampler from the factory.
    first, second = make_mirostat_v2(3.0, 0.5), make_mirostat_v2(3.0, 0.5)
    s1, s2 = state(1), state(2)
    got = []
    for row in rows:
        got.append(first(row, s1))
        second(row[::-1].copy(), s2)
    assert got == expected
    assert first is not second and first.mu != second.mu


def test_mirostat_steers_the_average_surprise_to_tau():
    row = np.random.default_rng(4).normal(0, 2.0, 3000).astype(np.float32)
    sampler, s = make_mirostat_v2(tau=3.0, eta=0.1), state(9)
    surprises = []
    for _ in range(3000):
        before = sampler.mu
        sampler(row, s)
        surprises.append(3.0 + (before - sampler.mu) / 0.1)  # mu moves by eta * (surprise - tau)
    assert np.mean(surprises[500:]) == pytest.approx(3.0, abs=0.1)


# --- make_sampler: the fast path and the chain are the pure filters composed ---------------


def reference(
    temperature, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, top_n_sigma=0.0, xtc_threshold=0.1, xtc_probability=0.0
):
    """The chain of make_sampler's docstring, composed from the public filters."""

    def sample(logits, s):
        c = candidates(logits, temperature)
        c = apply_top_n_sigma(c, top_n_sigma)
        c = apply_top_k(c, top_k)
        c = apply_typical(c, typical_p)
        c = apply_top_p(c, top_p)
        c = apply_min_p(c, min_p)
        c = apply_xtc(c, xtc_threshold, xtc_probability, s.rng)
        return draw(c, s.rng)

    return sample


SETTINGS = [
    {"temperature": 0.8},
    {"temperature": 1.3},
    {"temperature": 0.8, "top_k": 40},
    {"temperature": 0.8, "top_p": 0.9},
    {"temperature": 1.0, "min_p": 0.05},
    {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    {"temperature": 0.7, "top_k": 400, "min_p": 0.01},
    {"temperature": 0.8, "typical_p": 0.9},
    {"temperature": 1.0, "top_n_sigma": 1.0},
    {"temperature": 0.8, "top_n_sigma": 1.5, "top_k": 20, "min_p": 0.02},
    {"temperature": 0.8, "xtc_threshold": 0.05, "xtc_probability": 0.5, "top_p": 0.95},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_make_sampler_draws_what_the_pure_filters_draw(settings):
    # Shaped like Gemma's rows (mean -6, deviation 5), with a few tokens far ahead as real rows have.
    rng = np.random.default_rng(21)
    rows = rng.normal(-6.0, 5.0, (12, 262_144)).astype(np.float32)
    for row in rows:
        row[rng.choice(row.size, 8, replace=False)] += rng.uniform(6.0, 14.0, 8).astype(np.float32)
    ours, theirs = make_sampler(**settings), reference(**settings)
    for i, row in enumerate(rows):
        s1, s2 = state(i), state(i)
        assert [ours(row, s1) for _ in range(5)] == [theirs(row, s2) for _ in range(5)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"typical_p": 0.0}, "typical_p must be in"),
        ({"xtc_threshold": 1.5}, "xtc_threshold must be in"),
        ({"xtc_probability": -0.1}, "xtc_probability must be in"),
        ({"top_n_sigma": math.inf}, "top_n_sigma must be"),
        ({"mirostat": 1}, "mirostat must be 0"),
        ({"mirostat": 2, "mirostat_tau": -1.0}, "mirostat_tau must be"),
    ],
)
def test_invalid_new_settings_name_their_bound(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sampler(1.0, **kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: apply_top_k(cut([0.5, 0.5]), -1), "top_k must be"),
        (lambda: apply_top_p(cut([0.5, 0.5]), 0.0), "top_p must be"),
        (lambda: apply_min_p(cut([0.5, 0.5]), 1.5), "min_p must be"),
        (lambda: apply_temperature(cut([0.5, 0.5]), -1.0), "temperature must be"),
        (lambda: make_dry_penalty(0.8, base=0.5), "dry_base must be"),
        (lambda: make_dry_penalty(0.8, penalty_last_n=-1), "dry_penalty_last_n must be"),
    ],
)
def test_each_filter_names_its_bound(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_make_sampler_with_mirostat_makes_a_new_sampler_each_call():
    assert make_sampler(0.8, mirostat=2) is not make_sampler(0.8, mirostat=2)


# --- adapters ---------------------------------------------------------------------------


def test_from_numpy_processor_takes_the_llama_cpp_python_convention():
    seen = {}

    def ban_repeats(input_ids, scores):  # (input_ids, scores) -> scores, NumPy in and out
        seen["ids"] = input_ids.copy()
        scores[input_ids] = -np.inf
        return scores

    logits = np.zeros(6, dtype=np.float32)
    out = from_numpy_processor(ban_repeats)(logits, state(tokens=[1, 4]))
    assert seen["ids"].tolist() == [1, 4]
    assert np.isneginf(out[[1, 4]]).all() and not logits.any()


def test_from_transformers_passes_a_batch_of_one_as_torch_tensors():
    torch = pytest.importorskip("torch", reason="torch is not installed (it is not a dependency of helios-engine)")
    shapes = {}

    def processor(input_ids, scores):
        shapes["ids"], shapes["scores"] = (tuple(input_ids.shape), input_ids.dtype), (tuple(scores.shape), scores.dtype)
        return scores - input_ids.shape[-1]

    out = from_transformers(processor)(np.zeros(6, dtype=np.float32), state(tokens=[1, 4, 4]))
    assert shapes == {"ids": ((1, 3), torch.int64), "scores": ((1, 6), torch.float32)}
    assert out.dtype == np.float32 and out.tolist() == [-3.0] * 6


def test_transformers_processors_work_through_the_adapter():
    pytest.importorskip("torch", reason="torch is not installed (it is not a dependency of helios-engine)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1], dtype=np.float64)).astype(np.float32)
    s = state(tokens=[0, 1, 0])
    penalised = from_transformers(transformers.RepetitionPenaltyLogitsProcessor(2.0))(logits, s)
    np.testing.assert_allclose(penalised, [logits[0] * 2, logits[1] * 2, logits[2], logits[3]], rtol=1e-6)
    banned = from_transformers(transformers.NoRepeatNGramLogitsProcessor(2))(logits, s)
    assert banned[1] == -np.inf  # "0 1" was seen: after 0, 1 would repeat it
    typical = from_transformers(transformers.TypicalLogitsWarper(0.4))(logits, s)
    assert np.isfinite(typical).tolist() == [False, True, True, False]  # as apply_typical(0.4) keeps 1 and 2
    assert sorted(apply_typical(candidates(logits), 0.4).ids.tolist()) == [1, 2]
