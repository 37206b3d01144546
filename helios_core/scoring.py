"""Scoring: the log-probabilities a model gives to text it did not generate, and perplexity.

Logits rows are reduced to log-probabilities as soon as a decode returns
them, so memory holds at most one decode's output rows (n_batch of them,
1 MiB each on Gemma's 262,144-token vocabulary), never one per token of the
text. Log-softmax is computed as llama.cpp's llama-perplexity computes it:
exp in float32 after subtracting the row's maximum, summed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.model import Model


@dataclass
class Scored:
    """One input's scores. Position i of the arrays below is token i + 1's.

    tokens: int32 (n,), the input's tokens (BOS included when the model adds one).
    logprobs: float64 (n - 1,), log p(tokens[i + 1] | tokens[: i + 1]), natural log.
    top_tokens, top_logprobs: (n - 1, k) the k most likely tokens at each position,
        best first, and their logprobs (k = 0: empty).
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    top_tokens: np.ndarray
    top_logprobs: np.ndarray

    @classmethod
    def empty(cls, tokens: Sequence[int], top_logprobs: int = 0) -> Scored:
        """Arrays for `tokens`, to be filled as their rows are reduced."""
        tokens = np.asarray(tokens, dtype=np.int32)
        n = max(tokens.size - 1, 0)
        return cls(
            tokens,
            np.zeros(n, dtype=np.float64),
            np.zeros((n, top_logprobs), dtype=np.int32),
            np.zeros((n, top_logprobs), dtype=np.float64),
        )

    def fill(self, at: int, rows: np.ndarray) -> None:
        """Reduce logits rows predicting tokens[at + 1], tokens[at + 2], ... into the arrays."""
        n, k = rows.shape[0], self.top_tokens.shape[1]
        chosen, best, best_logprobs = score_rows(rows, self.tokens[at + 1 : at + 1 + n], k)
        self.logprobs[at : at + n] = chosen
        self.top_tokens[at : at + n] = best
        self.top_logprobs[at : at + n] = best_logprobs


@dataclass
class Perplexity:
    """llama-perplexity's estimate: exp(nll / count) over the second half of every chunk."""

    value: float
    nll: float  # summed negative log-likelihood, natural log
    count: int  # tokens scored
    chunks: int


def _log_normalizers(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the maximum, and log sum exp(row - maximum) (exp in float32, summed in float64).

    The exp over the whole vocabulary is the cost of scoring: it runs once per
    row, in place, a few rows at a time, so its scratch stays in cache and
    memory holds one scratch block, not a copy of every row.
    """
    peak = rows.max(axis=1)
    log_total = np.empty(rows.shape[0], dtype=np.float64)
    scratch = np.empty((min(rows.shape[0], _EXP_ROWS), rows.shape[1]), dtype=np.float32)
    for start in range(0, rows.shape[0], _EXP_ROWS):
        block = rows[start : start + _EXP_ROWS]
        out = scratch[: block.shape[0]]
        np.subtract(block, peak[start : start + _EXP_ROWS, None], out=out)
        np.exp(out, out=out)
        log_total[start : start + block.shape[0]] = out.sum(axis=1, dtype=np.float64)
    return peak, np.log(log_total)


# Rows per block of the log-sum-exp: 4 MiB of float32 scratch on a 262,144-token vocabulary.
_EXP_ROWS = 4


# Logits rows one decode asks for at most: 1 MiB each on Gemma's vocabulary, and
# llama.cpp keeps an output buffer as large as the largest request it has seen.
ROWS_PER_DECODE = 128


@dataclass
class _Window:
    """Part of one input decoded from an empty sequence: its rows first_row.. are scored.

    tokens[j] is input position offset + j (tokens[0] may be BOS in place of
    the input's own token); row j predicts input position offset + j + 1.
    """

    result: Scored
    tokens: np.ndarray
    offset: int
    first_row: int


def score(
    ctx: Context, inputs: Sequence[str | Sequence[int]], *, top_logprobs: int = 0, stride: int | None = None
) -> list[Scored]:
    """Score texts (tokenized with BOS) or token lists under the model, as many at once as the context holds.

    Up to ctx.n_seq_max sequences share each decode, and each decode asks for
    at most ROWS_PER_DECODE logits rows, reduced to log-probabilities before
    the next. An input longer than one sequence (ctx.n_ctx_seq tokens) is
    scored in windows of that length, each starting `stride` tokens after the
    previous (default: half a window) and scoring only tokens no earlier
    window scored, so every token after the first window has at least
    n_ctx_seq - stride tokens of context. A window after the first starts
    with BOS in place of its first token when the input starts with BOS, as
    llama-perplexity's chunks do. The context's memory is cleared first.
    """
    if top_logprobs < 0:
        raise ValueError(f"top_logprobs must be >= 0, got {top_logprobs}")
    width = ctx.n_ctx_seq
    stride = width // 2 if stride is None else stride
    if not 1 <= stride < width:
        raise ValueError(f"stride must be in [1, {width}) for windows of {width} tokens, got {stride}")
    vocab = ctx.model.vocab
    results, windows = [], []
    for index, item in enumerate(inputs):
        result = Scored.empty(_tokens(vocab, item, index), top_logprobs)
        results.append(result)
        windows += _windows(result, width, stride, vocab.bos if vocab.add_bos else None)
    batch = Batch(min(ctx.n_batch, ROWS_PER_DECODE))
    for group_start in range(0, len(windows), ctx.n_seq_max):
        group = windows[group_start : group_start + ctx.n_seq_max]
        ctx.memory_clear()
        done = [0] * len(group)  # tokens of each window decoded so far
        while any(done[s] < window.tokens.size for s, window in enumerate(group)):
            batch.clear()
            runs: list[tuple[_Window, int, int]] = []  # (window, first row, rows) this decode outputs
            for s, window in enumerate(group):
                room = batch.capacity - batch.n_tokens
                if room == 0:
                    break
                start, end = done[s], min(window.tokens.size, done[s] + room)
                if start == end:
                    continue
                rows = batch.add(window.tokens[start:end], start, s)
                # Rows from first_row on are scored, but the window's last predicts nothing it holds.
                lo, hi = max(start, window.first_row), min(end, window.tokens.size - 1)
                if hi > lo:
                    batch.logits[rows.start + lo - start : rows.start + hi - start] = 1
                    runs.append((window, lo, hi - lo))
                done[s] = end
            ctx.decode(batch)
            offset = 0
            outputs = ctx.output_logits() if runs else None
            for window, first, n in runs:
                # A window's tokens are the input's from its offset on (but a BOS in place of the first).
                window.result.fill(window.offset + first, outputs[offset : offset + n])
                offset += n
    return results


def score_rows(
    rows: np.ndarray, targets: np.ndarray, top_logprobs: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For logits rows (n, n_vocab): log p(targets[r]), and each row's top_logprobs best tokens
    (int32, best first) with their logprobs, for every row at once (logprobs in float64)."""
    n = rows.shape[0]
    peak, log_total = _log_normalizers(rows)
    chosen = (rows[np.arange(n), targets] - peak).astype(np.float64) - log_total
    if not top_logprobs:
        return chosen, np.zeros((n, 0), dtype=np.int32), np.zeros((n, 0), dtype=np.float64)
    best = np.argpartition(rows, -top_logprobs, axis=1)[:, -top_logprobs:]
    best_logits = np.take_along_axis(rows, best, axis=1)
    order = np.argsort(-best_logits, axis=1, kind="stable")
    # The same arithmetic as `chosen`, so the chosen token's logprob equals its entry among the best
    # exactly (evaluation clients test "greedy" with ==).
    best_logprobs = (np.take_along_axis(best_logits, order, axis=1) - peak[:, None]).astype(np.float64)
    best_logprobs -= log_total[:, None]
    return chosen, np.take_along_axis(best, order, axis=1).astype(np.int32), best_logprobs


def _windows(result: Scored, width: int, stride: int, bos: int | None) -> list[_Window]:
    tokens = result.tokens
    if tokens.size <= width:
        return [_Window(result, tokens, 0, 0)]
    windows, scored_to, begin = [], 1, 0  # scored_to: first input position not yet scored
    while scored_to < tokens.size:
        end = min(begin + width, tokens.size)
        window = tokens[begin:end]
        if begin and bos is not None and tokens[0] == bos:
            window = window.copy()
            window[0] = bos
        windows.append(_Window(result, window, begin, scored_to - 1 - begin))
        scored_to, begin = end, begin + stride
    return windows


def perplexity(
    model: Model, text: str, *, n_ctx: int = 512, n_batch: int = 128, n_threads: int | None = None
) -> Perplexity:
    """Perplexity of `text` exactly as llama.cpp's llama-perplexity defines it.

    The text is tokenized with BOS and cut into chunks of n_ctx tokens (a
    partial last chunk is dropped); each chunk starts with BOS in place of its
    first token, is decoded from an empty cache in pieces of n_batch tokens,
    and only its second half is scored, so every scored token has at least
    n_ctx / 2 tokens of context. `llama-perplexity -c N_CTX -b N_BATCH` on the
    same file, model and threads decodes the same batches and gives the same
    number. Memory: at most n_batch logits rows at a time.
    """
    if n_ctx < 4 or n_batch < 1:
        raise ValueError(f"perplexity needs n_ctx >= 4 and n_batch >= 1, got {n_ctx}, {n_batch}")
    if n_batch < n_ctx and n_ctx % n_batch:
        raise ValueError(f"n_batch ({n_batch}) must divide n_ctx ({n_ctx}), as in llama-perplexity")
    n_batch = min(n_batch, n_ctx)
    vocab = model.vocab
    tokens = np.asarray(vocab.tokenize(text, add_special=True), dtype=np.int32)
    n_chunks = tokens.size // n_ctx
    if n_chunks < 2:
        raise ValueError(f"perplexity needs at least {2 * n_ctx} tokens with n_ctx={n_ctx}; the text has {tokens.size}")
    first = n_ctx // 2
    nll, count = 0.0, 0
    # llama-perplexity's context: one sequence, its window cache, its own KV layout.
    with Context(model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads, swa_full=False) as ctx:
        batch = Batch(n_batch)
        for chunk_index in range(n_chunks):
            chunk = tokens[chunk_index * n_ctx : (chunk_index + 1) * n_ctx].copy()
            if vocab.add_bos:
                chunk[0] = vocab.bos
            ctx.memory_clear()
            for start in range(0, n_ctx, n_batch):
                end = start + n_batch
                batch.set(chunk[start:end], start, logits_last=False)
                if end > first:
                    batch.logits[max(first, start) - start : n_batch] = 1
                ctx.decode(batch)
                if end <= first:
                    continue
                # Rows for positions max(first, start) .. end - 1; the chunk's last row predicts nothing.
                positions = np.arange(max(first, start), min(end, n_ctx - 1))
                rows = ctx.output_logits()[: positions.size]
                nll -= float(score_rows(rows, chunk[positions + 1])[0].sum())
                count += positions.size
    return Perplexity(math.exp(nll / count), nll, count, n_chunks)


def _tokens(vocab, item: str | Sequence[int], index: int) -> np.ndarray:
    if isinstance(item, str):
        tokens = np.asarray(vocab.tokenize(item, add_special=True), dtype=np.int32)
    else:
        tokens = np.asarray(item, dtype=np.int64).reshape(-1)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab.n_vocab):
            raise ValueError(f"input {index}: token ids must lie in [0, {vocab.n_vocab})")
        tokens = tokens.astype(np.int32)
    if tokens.size < 2:
        raise ValueError(f"input {index} has {tokens.size} token(s); scoring needs at least 2")
    return tokens
