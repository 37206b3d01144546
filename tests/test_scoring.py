"""Scoring: log-probabilities of given text, batched or not, and perplexity equal to llama-perplexity's."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.resolve import default_model_path
from helios_core.scoring import log_softmax_at, perplexity, score
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
        ([[2] * 300], "more than a sequence"),
    ],
    ids=["one-token", "id-too-large", "negative-id", "too-long"],
)
def test_bad_inputs_are_refused_with_a_reason(model, inputs, message):
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        with pytest.raises(ValueError, match=message):
            score(ctx, inputs)


def test_log_softmax_at_is_exact_on_a_known_row():
    rows = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32))
    np.testing.assert_allclose(log_softmax_at(rows, np.array([0, 2])), np.log([0.5, 0.7]), atol=1e-6)


def test_perplexity_equals_llama_perplexity_on_the_same_text(model, tmp_path):
    binary = _tool("llama-perplexity")
    text = (LLAMA_CPP / "README.md").read_text()[:2500].rstrip("\n")  # it drops one trailing newline
    path = tmp_path / "text.txt"
    path.write_text(text)
    n_ctx, n_batch = 128, 64
    ours = perplexity(model, text, n_ctx=n_ctx, n_batch=n_batch, n_threads=THREADS)
    result = subprocess.run(
        [str(binary), "-m", str(default_model_path()), "-f", str(path), "-c", str(n_ctx), "-b", str(n_batch),
         "-t", str(THREADS)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = float(re.search(r"Final estimate: PPL = ([0-9.]+)", result.stdout + result.stderr).group(1))
    assert ours.chunks >= 4
    assert abs(ours.value - theirs) / theirs < 1e-3, (ours, theirs)


def _tool(name: str):
    bin_dir = subprocess.run([sys.executable, str(ROOT / "vendor" / "build.py"), "--print-bin-dir"],
                             capture_output=True, text=True, check=True).stdout.strip()
    binary = ROOT / bin_dir / name if not bin_dir.startswith("/") else type(ROOT)(bin_dir) / name
    assert binary.exists(), f"{binary} is missing: `make test` builds it (vendor/build.py --tools)"
    return binary
