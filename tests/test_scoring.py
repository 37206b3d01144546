"""Scoring: log-probabilities of given text, batched or not, and perplexity equal to llama-perplexity's."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.generate import GenerationParams, Generator
from helios_core.resolve import default_model_path
from helios_core.scoring import ROWS_PER_DECODE, perplexity, score, score_rows
from tests.conftest import LLAMA_CPP, LOGIT_TOLERANCE, ROOT, THREADS

TEXTS = ["The capital of France is Paris.", "def add(a, b):\n    return a + b\n", "Roses are red, violets are blue."]


def test_logprobs_are_the_log_softmax_of_the_logits_along_the_text(model):
    tokens = model.vocab.tokenize(TEXTS[0])
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        scored = score(ctx, [TEXTS[0]], top_logprobs=2)[0]
        # The same decode by hand: one batch, every row but the last flagged.
        batch = Batch(64)
        batch.set(tokens, logits_last=False)
        batch.logits[: len(tokens) - 1] = 1
        ctx.memory_clear()
        ctx.decode(batch)
        rows = ctx.output_logits().astype(np.float64)
    expected = [
        row[t] - row.max() - np.log(np.exp(row - row.max()).sum()) for row, t in zip(rows, tokens[1:], strict=True)
    ]
    assert scored.tokens.tolist() == tokens
    np.testing.assert_allclose(scored.logprobs, expected, atol=1e-4)
    best = rows.argmax(axis=1)
    assert scored.top_tokens[:, 0].tolist() == best.tolist()


def test_top_logprobs_are_sorted_and_bound_the_token_that_came(model):
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        scored = score(ctx, [TEXTS[1]], top_logprobs=5)[0]
    assert scored.top_logprobs.shape == (scored.tokens.size - 1, 5)
    assert np.all(np.diff(scored.top_logprobs, axis=1) <= 0)
    assert np.all(scored.top_logprobs[:, 0] >= scored.logprobs - 1e-5)
    assert np.all(np.exp(scored.top_logprobs.astype(np.float64)).sum(axis=1) <= 1 + 1e-5)
    assert np.all(scored.logprobs <= 0)


def test_inputs_batched_together_score_as_they_do_alone_within_the_tolerance(model):
    # Several sequences in one decode move logits a little on CPU (see LOGIT_TOLERANCE); a
    # logprob is a logit minus a log-sum-exp, so it moves at most twice as much.
    with Context(model, n_ctx=512, n_seq_max=3, n_batch=64, n_threads=THREADS) as ctx:
        together = score(ctx, TEXTS)
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        alone = [score(ctx, [text])[0] for text in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert a.tokens.tolist() == b.tokens.tolist()
        assert float(np.abs(a.logprobs - b.logprobs).max()) <= 2 * LOGIT_TOLERANCE


def test_an_input_longer_than_one_decode_is_scored_across_decodes(model):
    text = "one two three four five six seven eight nine ten " * 8
    with Context(model, n_ctx=512, n_batch=128, n_threads=THREADS) as ctx:
        whole = score(ctx, [text])[0]
    with Context(model, n_ctx=512, n_batch=16, n_threads=THREADS) as ctx:
        pieces = score(ctx, [text])[0]
    assert whole.tokens.size > 4 * 16
    assert float(np.abs(whole.logprobs - pieces.logprobs).max()) <= 2 * LOGIT_TOLERANCE


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([[2]], "needs at least 2"),
        ([[2, 300_000]], "must lie in"),
        ([[2, -1]], "must lie in"),
    ],
    ids=["one-token", "id-too-large", "negative-id"],
)
def test_bad_inputs_are_refused_with_a_reason(model, inputs, message):
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        with pytest.raises(ValueError, match=message):
            score(ctx, inputs)


def test_an_input_longer_than_a_sequence_is_scored_in_overlapping_windows(model):
    text = " ".join(f"item {i} is {i * 7 % 13}." for i in range(60))
    tokens = model.vocab.tokenize(text)
    stride = 160
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        width = ctx.n_ctx_seq
        assert width + stride < len(tokens) <= width + 2 * stride  # three windows
        windowed = score(ctx, [tokens], stride=stride)[0]
        # The windows by hand, decoded in the same batches: each starts with BOS and scores
        # only the targets the windows before it did not.
        first = score(ctx, [tokens[:width]])[0]
        second = score(ctx, [[model.vocab.bos] + tokens[stride + 1 : stride + width]])[0]
        third = score(ctx, [[model.vocab.bos] + tokens[2 * stride + 1 :]])[0]
    assert windowed.logprobs.shape == (len(tokens) - 1,)
    # Row j of a window starting at input position p predicts position p + j + 1.
    expected = np.concatenate(
        [
            first.logprobs,
            second.logprobs[width - stride - 1 :],
            third.logprobs[width - stride - 1 :],
        ]
    )
    # The hand-built windows flag more rows for output than score() does, and another CPU's kernels
    # may round a differently sized output matmul differently: within the batch tolerance, and on
    # average far closer than a window scored against the wrong targets (several nats off).
    difference = np.abs(windowed.logprobs - expected)
    assert difference.max() <= 2 * LOGIT_TOLERANCE and difference.mean() < 0.25, (difference.max(), difference.mean())


def test_a_stride_that_leaves_no_context_is_refused(model):
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        with pytest.raises(ValueError, match="stride must be in"):
            score(ctx, [[2] * 300], stride=ctx.n_ctx_seq)


# Scores a text of N tokens in a fresh process and prints how much its peak RSS grew while scoring.
_SCORE_AND_MEASURE = """
import resource, sys
from helios_core import Model
from helios_core.context import Context
from helios_core.generate import GenerationParams, Generator
from helios_core.resolve import default_model_path
from helios_core.scoring import score
n_tokens, threads = int(sys.argv[1]), int(sys.argv[2])
model = Model(default_model_path())
tokens = [model.vocab.bos] + [1000 + (i * 7919) % 200_000 for i in range(n_tokens - 1)]
with Context(model, n_ctx=512, n_batch=512, n_threads=threads) as ctx:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scored = score(ctx, [tokens], stride=384)[0]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
assert scored.logprobs.size == n_tokens - 1 and (scored.logprobs < 0).all()
print(grown // 1024)
"""


@pytest.mark.parametrize("n_tokens", [1_000, pytest.param(20_000, marks=pytest.mark.slow)], ids=["1k", "20k"])
def test_scoring_a_long_text_keeps_memory_bounded(n_tokens):
    # Held whole, the logits of N tokens would take N MiB (Gemma's rows are 1 MiB); scoring keeps
    # at most ROWS_PER_DECODE of them in llama.cpp's output buffer and in its compute buffer (2 x 128
    # MiB; peak RSS measured 261-264 MiB above its start at 600 to 2,000 tokens), and reduces them in
    # small blocks. 1,000 tokens are three windows of 512, and 1,000 MiB held whole: 2.6 times the bound.
    result = subprocess.run(
        [sys.executable, "-c", _SCORE_AND_MEASURE, str(n_tokens), str(THREADS)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    grown_mib = int(result.stdout.split()[-1])
    assert grown_mib < 3 * ROWS_PER_DECODE, f"peak RSS grew {grown_mib} MiB while scoring {n_tokens} tokens"


def test_a_generation_scores_its_prompt_as_score_does(model):
    text = TEXTS[0]
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        expected = score(ctx, [text], top_logprobs=2)[0]
    with Generator(model, n_ctx=512, n_threads=THREADS) as generator:
        generator.generate("Unrelated text first, to fill the cache.", GenerationParams(max_tokens=2)).text()
        generation = generator.generate(text, GenerationParams(max_tokens=0, prompt_logprobs=2))
        assert list(generation) == []  # max_tokens=0: read the prompt, generate nothing
        scored = generation.prompt_logprobs
    assert generation.finish_reason == "length"
    assert generation.usage.completion_tokens == 0 and generation.usage.cached_tokens == 0
    assert scored.tokens.tolist() == expected.tokens.tolist()
    np.testing.assert_allclose(scored.logprobs, expected.logprobs, atol=2 * LOGIT_TOLERANCE)
    assert scored.top_tokens.shape == (len(scored.tokens) - 1, 2)


def test_scoring_a_prompt_longer_than_one_step_of_rows_fills_every_position(model):
    # More prompt rows than ROWS_PER_DECODE: the engine spreads them over steps.
    tokens = [model.vocab.bos] + model.vocab.tokenize(" ".join(["word"] * (ROWS_PER_DECODE + 40)), add_special=False)
    with Generator(model, n_ctx=512, n_threads=THREADS) as generator:
        generation = generator.generate(tokens, GenerationParams(max_tokens=1, prompt_logprobs=0, temperature=0))
        steps = list(generation)
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        expected = score(ctx, [tokens])[0]
    assert len(tokens) > ROWS_PER_DECODE + 1 and len(steps) == 1
    np.testing.assert_allclose(generation.prompt_logprobs.logprobs, expected.logprobs, atol=2 * LOGIT_TOLERANCE)
    assert np.all(generation.prompt_logprobs.logprobs < 0)


def test_score_rows_is_exact_on_a_known_row():
    rows = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32))
    np.testing.assert_allclose(score_rows(rows, np.array([0, 2]))[0], np.log([0.5, 0.7]), atol=1e-6)


def test_perplexity_equals_llama_perplexity_on_the_same_text(model, tmp_path):
    binary = _tool("llama-perplexity")
    # About 290 tokens: 4 chunks of 64, each decoded in two batches, only the second one scored.
    text = (LLAMA_CPP / "README.md").read_text()[:800].rstrip("\n")  # it drops one trailing newline
    path = tmp_path / "text.txt"
    path.write_text(text)
    n_ctx, n_batch = 64, 32
    ours = perplexity(model, text, n_ctx=n_ctx, n_batch=n_batch, n_threads=THREADS)
    result = subprocess.run(
        [
            str(binary),
            "-m",
            str(default_model_path()),
            "-f",
            str(path),
            "-c",
            str(n_ctx),
            "-b",
            str(n_batch),
            "-t",
            str(THREADS),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = float(re.search(r"Final estimate: PPL = ([0-9.]+)", result.stdout + result.stderr).group(1))
    assert ours.chunks >= 4
    assert abs(ours.value - theirs) / theirs < 1e-3, (ours, theirs)


def _tool(name: str):
    bin_dir = subprocess.run(
        [sys.executable, str(ROOT / "vendor" / "build.py"), "--print-bin-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    binary = ROOT / bin_dir / name if not bin_dir.startswith("/") else type(ROOT)(bin_dir) / name
    assert binary.exists(), f"{binary} is missing: `make test` builds it (vendor/build.py --tools)"
    return binary
