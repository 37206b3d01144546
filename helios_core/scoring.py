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


@dataclass
class Perplexity:
    """llama-perplexity's estimate: exp(nll / count) over the second half of every chunk."""

    value: float
    nll: float  # summed negative log-likelihood, natural log
    count: int  # tokens scored
    chunks: int


def log_softmax_at(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(targets[r]) under the softmax of rows[r], for every row at once (float64)."""
    peak, log_total = _log_normalizers(rows)
    chosen = rows[np.arange(rows.shape[0]), targets]
    return (chosen - peak).astype(np.float64) - log_total


def _log_normalizers(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the maximum, and log sum exp(row - maximum) (exp in float32, summed in float64).

    The exp over the whole vocabulary is the cost of scoring: compute it once per row.
    """
    peak = rows.max(axis=1)
    return peak, np.log(np.exp(rows - peak[:, None]).sum(axis=1, dtype=np.float64))


def score(ctx: Context, inputs: Sequence[str | Sequence[int]], *, top_logprobs: int = 0) -> list[Scored]:
    """Score texts (tokenized with BOS) or token lists under the model, as many at once as the context holds.

    Up to ctx.n_seq_max inputs share each decode; each input must fit one
    sequence of the context (ctx.n_ctx_seq tokens). The context's memory is
    cleared first and left holding the last group's tokens.
    """
    if top_logprobs < 0:
        raise ValueError(f"top_logprobs must be >= 0, got {top_logprobs}")
    vocab = ctx.model.vocab
    token_lists = [_tokens(vocab, item, i, ctx.n_ctx_seq) for i, item in enumerate(inputs)]
    results = [
        Scored(
            tokens,
            np.zeros(tokens.size - 1, dtype=np.float64),
            np.zeros((tokens.size - 1, top_logprobs), dtype=np.int32),
            np.zeros((tokens.size - 1, top_logprobs), dtype=np.float32),
        )
        for tokens in token_lists
    ]
    batch = Batch(ctx.n_batch)
    for group_start in range(0, len(token_lists), ctx.n_seq_max):
        group = list(enumerate(token_lists[group_start : group_start + ctx.n_seq_max]))
        ctx.memory_clear()
        done = [0] * len(group)  # tokens of each sequence decoded so far
        while any(done[s] < tokens.size for s, tokens in group):
            batch.clear()
            # (result, first position, count) of each run whose rows this decode outputs
            runs: list[tuple[Scored, int, int]] = []
            for s, tokens in group:
                room = batch.capacity - batch.n_tokens
                if room == 0:
                    break
                start, end = done[s], min(tokens.size, done[s] + room)
                if start == end:
                    continue
                rows = batch.add(tokens[start:end], start, s)
                # Every token but the input's last predicts the next one.
                scored_end = min(end, tokens.size - 1)
                batch.logits[rows.start : rows.start + scored_end - start] = 1
                if scored_end > start:
                    runs.append((results[group_start + s], start, scored_end - start))
                done[s] = end
            ctx.decode(batch)
            if runs:
                _reduce(ctx.output_logits(), runs, top_logprobs)
    return results


def perplexity(model: Model, text: str, *, n_ctx: int = 512, n_batch: int = 128,
               n_threads: int | None = None) -> Perplexity:
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
    with Context(model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads, swa_full=False,
                 kv_unified=False) as ctx:
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
                nll -= float(log_softmax_at(rows, chunk[positions + 1]).sum())
                count += positions.size
    return Perplexity(math.exp(nll / count), nll, count, n_chunks)


def _tokens(vocab, item: str | Sequence[int], index: int, limit: int) -> np.ndarray:
    if isinstance(item, str):
        tokens = np.asarray(vocab.tokenize(item, add_special=True), dtype=np.int32)
    else:
        tokens = np.asarray(item, dtype=np.int64).reshape(-1)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab.n_vocab):
            raise ValueError(f"input {index}: token ids must lie in [0, {vocab.n_vocab})")
        tokens = tokens.astype(np.int32)
    if tokens.size < 2:
        raise ValueError(f"input {index} has {tokens.size} token(s); scoring needs at least 2")
    if tokens.size > limit:
        raise ValueError(f"input {index} has {tokens.size} tokens, more than a sequence of this context holds "
                         f"({limit}); use a larger n_ctx, or perplexity() for long texts")
    return tokens


def _reduce(rows: np.ndarray, runs: list[tuple[Scored, int, int]], top_logprobs: int) -> None:
    """Turn one decode's output rows into each run's logprobs (and top alternatives), in batch order."""
    offset = 0
    for result, start, n in runs:
        block = rows[offset : offset + n]
        offset += n
        targets = result.tokens[start + 1 : start + 1 + n]
        peak, log_total = _log_normalizers(block)
        chosen = block[np.arange(n), targets]
        result.logprobs[start : start + n] = (chosen - peak).astype(np.float64) - log_total
        if top_logprobs:
            best = np.argpartition(block, -top_logprobs, axis=1)[:, -top_logprobs:]
            best_logits = np.take_along_axis(block, best, axis=1)
            order = np.argsort(-best_logits, axis=1, kind="stable")
            result.top_tokens[start : start + n] = np.take_along_axis(best, order, axis=1)
            shift = (peak + log_total)[:, None]
            result.top_logprobs[start : start + n] = np.take_along_axis(best_logits, order, axis=1) - shift
