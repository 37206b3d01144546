"""Drafters guess a sequence's next tokens: PromptLookup copies from the text, DraftModel runs a smaller GGUF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from helios_core.sampling.cut import best_token

EMPTY = np.zeros(0, dtype=np.int32)
EMPTY.flags.writeable = False


class Drafter(Protocol):
    """Guesses the next tokens of one sequence.

    propose(tokens, k): up to k int32 token ids likely to follow `tokens` (the prompt
    and everything generated so far, a read-only view); fewer, or none, when it has
    no good guess. It must be deterministic given its inputs: the acceptance rule
    assumes the draft is not itself a sample.

    A drafter that costs nothing to ask may also have lookup(tokens, k) -> (draft,
    evidence), evidence being how strongly it believes the draft (PromptLookup: the
    tokens matched); it is then asked for the most tokens a step could verify, and
    judged by its evidence (Speculation.offer).
    """

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class PromptLookup:
    """Drafts by copying: what followed the earlier occurrence that matches the most of the text's end.

    The match is the longest suffix of the text (ngram_min to ngram_max
    tokens) seen earlier; among matches of one length the latest (the most
    recent context) is taken. Its length is the evidence `lookup` returns:
    a text that has matched 30 tokens in a row is being copied and will likely
    go on, one that matched 2 is a guess. The search is a few vectorised
    comparisons over the sequence's tokens per step (microseconds for
    thousands of tokens); nothing is kept between calls.
    """

    ngram_max: int = 64
    ngram_min: int = 2

    def __post_init__(self):
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min}, {self.ngram_max}")

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray:
        return self.lookup(tokens, k)[0]

    def lookup(self, tokens: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        """Up to k drafted tokens, and how many tokens of the text's end matched (0: no draft)."""
        n_tokens = tokens.size
        if k <= 0 or n_tokens < 2:
            return EMPTY, 0
        # Ends of earlier occurrences of the text's last `length` tokens (an end before the text's
        # last token, so something follows it), narrowed one token further back at a time.
        ends = np.flatnonzero(tokens[: n_tokens - 1] == tokens[n_tokens - 1])
        length = 1
        while ends.size > 1 and length < self.ngram_max:
            earlier = ends - length
            ends_longer = ends[earlier >= 0]
            ends_longer = ends_longer[tokens[ends_longer - length] == tokens[n_tokens - 1 - length]]
            if not ends_longer.size:
                break
            ends, length = ends_longer, length + 1
        if ends.size == 1:  # one candidate left: measure the rest of its match in one comparison
            end = int(ends[0])
            span = min(self.ngram_max, end + 1)
            differ = np.flatnonzero(tokens[end + 1 - span : end + 1][::-1] != tokens[n_tokens - span :][::-1])
            length = int(differ[0]) if differ.size else span
        if not ends.size or length < self.ngram_min:
            return EMPTY, 0
        # What followed, and past the end of the text the same again: a text that
        # repeats itself with period n_tokens - follow goes on repeating.
        follow = int(ends[-1]) + 1
        return np.resize(tokens[follow : follow + k], k).astype(np.int32, copy=False), length

    def for_sequence(self, seq_id: int) -> PromptLookup:
        return self  # nothing per sequence


class DraftModel:
    """Drafts with a second model that shares the target's vocabulary: greedy, k tokens one by one.

    It keeps a context of its own with one sequence per slot of the target, and
    each sequence's cached tokens, so a step decodes only what the target
    accepted since the last draft plus the k new tokens. Runs on the thread that
    calls it (the engine thread); close() frees the context, not the model.
    """

    def __init__(self, model, n_seq: int, *, n_ctx_per_seq: int = 4096, n_threads: int | None = None, target=None):
        from helios_core.batch import Batch
        from helios_core.context import Context
        from helios_core.kvcache import CachedSequence

        if target is not None:
            check_same_vocabulary(model, target)
        self.model = model
        self.ctx = Context(model, n_ctx=n_ctx_per_seq * n_seq, n_seq_max=n_seq, n_batch=512, n_threads=n_threads)
        self.caches = [CachedSequence(i) for i in range(n_seq)]
        self.batch = Batch(self.ctx.n_batch)

    def for_sequence(self, seq_id: int) -> Drafter:
        return _DraftSequence(self, seq_id)

    def propose(self, seq_id: int, tokens: np.ndarray, k: int) -> np.ndarray:
        if k <= 0:
            return EMPTY
        cache = self.caches[seq_id]
        cached = cache.reuse(self.ctx, tokens)  # leaves at least the last token to decode
        pending = tokens[cached:]
        if cached + pending.size + k > self.ctx.n_ctx_seq:
            return EMPTY
        pos = cached
        for start in range(0, pending.size, self.batch.capacity):
            chunk = pending[start : start + self.batch.capacity]
            self.batch.set(chunk, pos, seq_id, logits_last=True)
            self.ctx.decode(self.batch)
            cache.tokens.extend(chunk.tolist())
            pos += chunk.size
        draft = np.empty(k, dtype=np.int32)
        for i in range(k):
            draft[i] = best_token(self.ctx.logits(-1))
            if i + 1 < k:
                self.batch.set_one(int(draft[i]), pos, seq_id)
                self.ctx.decode(self.batch)
                cache.tokens.append(int(draft[i]))
                pos += 1
        return draft

    def close(self) -> None:
        self.ctx.close()


@dataclass(frozen=True)
class _DraftSequence:
    draft_model: DraftModel
    seq_id: int

    def propose(self, tokens: np.ndarray, k: int) -> np.ndarray:
        return self.draft_model.propose(self.seq_id, tokens, k)


def check_same_vocabulary(draft, target) -> None:
    """Raise ValueError unless `draft` (a Model) tokenizes like `target`: drafts are token ids of the target."""
    if draft.vocab.n_vocab != target.vocab.n_vocab:
        raise ValueError(
            f"the draft model has {draft.vocab.n_vocab} tokens in its vocabulary and the target "
            f"{target.vocab.n_vocab}: a draft model must share the target's vocabulary"
        )
    probe = "Speculative decoding, 2026: def f(x): return x ** 2  # ünïcode"
    if draft.vocab.tokenize(probe) != target.vocab.tokenize(probe):
        raise ValueError(
            "the draft model tokenizes text differently from the target: it must share the target's vocabulary"
        )
