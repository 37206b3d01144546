"""DRY ("Don't Repeat Yourself"): a penalty on the token that would extend a repeated run of text.

As defined by koboldcpp and llama.cpp's dry sampler: if the last L tokens of
the history (L >= allowed_length) also occur earlier, followed there by token
t, emitting t would extend the repeat to L + 1 tokens, so t's logit loses
multiplier * base ** (L - allowed_length) (the longest such L counts).
Sequence breakers (by default newline, colon, quote and asterisk) end the
runs: a repeat never reaches back across one, and a single-token breaker is
never penalised itself.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Sequence

import numpy as np

from helios_core.sampling.contract import LogitsProcessor, SamplingState

# llama.cpp's default breakers (common/common.h), as text.
DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")

# float32's largest finite value is e^88.72: the penalty's exponent is clamped below it, as llama.cpp does.
_FLOAT32_MAX_LOG = 88.7228391

# As llama.cpp: a breaker string is cut to 40 bytes, the tokens after its first one to 20.
_MAX_BREAKER_BYTES = 40
_MAX_BREAKER_TAIL = 20


def make_dry_penalty(
    multiplier: float,
    base: float = 1.75,
    allowed_length: int = 2,
    penalty_last_n: int = 64,
    sequence_breakers: Iterable[Sequence[int]] = (),
) -> LogitsProcessor:
    """The DRY penalty as a logits processor (llama-server's dry_* settings and defaults).

    multiplier: penalty for a repeat of exactly allowed_length tokens (0 = off).
    base: growth per token of repeat beyond that (>= 1).
    allowed_length: the longest repeat left unpenalised (tokens).
    penalty_last_n: how many of the latest tokens, prompt included, are searched (0 = off).
    sequence_breakers: token sequences that end a run; make them from text with
        dry_sequence_breakers(vocab). None by default: a processor knows no vocabulary.

    The processor reads only `state.tokens`, so one may serve many requests.
    Its cost grows with the total length of the repeats it finds: microseconds
    on ordinary text, and at most O(penalty_last_n ** 2) element compares for a
    history that is one token over and over.
    """
    if not multiplier >= 0 or not math.isfinite(multiplier):
        raise ValueError(f"dry_multiplier must be >= 0 (0 = off), got {multiplier}")
    if not base >= 1.0 or not math.isfinite(base):
        raise ValueError(f"dry_base must be >= 1, got {base}")
    if allowed_length < 0:
        raise ValueError(f"dry_allowed_length must be >= 0, got {allowed_length}")
    if penalty_last_n < 0:
        raise ValueError(f"dry_penalty_last_n must be >= 0 (0 = off), got {penalty_last_n}")
    breakers: dict[int, list[tuple[int, ...]]] = {}
    for sequence in sequence_breakers:
        if len(sequence) == 0:
            raise ValueError("a DRY sequence breaker needs at least one token")
        head, *tail = (int(t) for t in sequence)
        if tuple(tail) not in breakers.setdefault(head, []):
            breakers[head].append(tuple(tail))
    heads = np.fromiter(breakers, dtype=np.int64, count=len(breakers))
    single_token = np.fromiter((h for h, tails in breakers.items() if () in tails), dtype=np.int64)
    max_exponent = int(_FLOAT32_MAX_LOG / math.log(base)) if base > 1.000001 else 0

    def process(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        if multiplier == 0.0 or penalty_last_n == 0:
            return logits
        window = state.tokens[-penalty_last_n:]
        if window.size <= allowed_length:
            return logits
        limit = _repeat_limit(window, breakers, heads)
        if limit < allowed_length:
            return logits
        tokens, lengths = _repeats(window, limit, allowed_length)
        if single_token.size:
            allowed = ~np.isin(tokens, single_token)
            tokens, lengths = tokens[allowed], lengths[allowed]
        if tokens.size == 0:
            return logits
        exponent = lengths - allowed_length
        if max_exponent > 0:
            exponent = np.minimum(exponent, max_exponent)
        out = logits.copy()
        out[tokens] -= (multiplier * np.power(float(base), exponent)).astype(np.float32)
        return out

    return process


def dry_sequence_breakers(vocab, breakers: Iterable[str] = DRY_SEQUENCE_BREAKERS) -> tuple[tuple[int, ...], ...]:
    """Token sequences for make_dry_penalty from breaker strings, as llama.cpp derives them.

    A token whose text contains a breaker is a breaker by itself. A token whose
    text ends with the start of a breaker begins one: the sequence is that
    token followed by the tokenization of the rest of the breaker (at most 20
    tokens). The first call for a vocabulary and a set of breakers searches
    every token's piece (vocab.pieces, read once per vocabulary) in one NumPy
    pass; the answer is kept for as long as the vocabulary lives, so later
    calls cost a lookup.
    """
    key = tuple(breakers)
    known = _BREAKERS.setdefault(vocab, {})
    if key not in known:
        if len(known) >= _BREAKER_SETS_KEPT:
            del known[next(iter(known))]  # the oldest: requests may each name their own breakers
        known[key] = _derive_breakers(vocab, key)
    return known[key]


# vocabulary -> breaker strings -> their token sequences; an entry goes with its vocabulary.
_BREAKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BREAKER_SETS_KEPT = 32


def _derive_breakers(vocab, breakers: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    strings = [s.encode("utf-8")[:_MAX_BREAKER_BYTES] for s in breakers]
    strings = [s for s in strings if s]
    sequences: list[tuple[int, ...]] = []
    rests: dict[bytes, tuple[int, ...]] = {}
    pieces = vocab.pieces
    for token in _tokens_holding(pieces, {s[0] for s in strings}):
        piece = pieces.special(token)
        for breaker in strings:
            if breaker in piece:
                sequences.append((token,))
                continue
            # Each place where the piece's end overlaps the breaker's start leaves a rest to tokenize.
            for start in range(max(0, len(piece) - len(breaker) + 1), len(piece)):
                if breaker.startswith(piece[start:]):
                    rest = breaker[len(piece) - start :]
                    if rest not in rests:
                        rests[rest] = tuple(vocab.tokenize(rest, add_special=False)[:_MAX_BREAKER_TAIL])
                    sequences.append((token, *rests[rest]))
    return tuple(dict.fromkeys(sequences))


def _tokens_holding(pieces, first_bytes: set[int]) -> list[int]:
    """The tokens whose piece holds one of `first_bytes`, in order.

    Only they can contain a breaker or end with its start (both hold its first
    byte), so the vocabulary is searched in one NumPy pass, not token by token.
    """
    data = np.frombuffer(pieces.data, dtype=np.uint8)
    at = np.flatnonzero(np.isin(data, np.fromiter(first_bytes, dtype=np.uint8, count=len(first_bytes))))
    return np.unique(np.searchsorted(pieces.offsets, at, side="right") - 1).tolist()


def _repeat_limit(window: np.ndarray, breakers: dict[int, list[tuple[int, ...]]], heads: np.ndarray) -> int:
    """How far back from the end a repeat may reach: up to the latest complete breaker sequence."""
    n = window.size
    if heads.size:
        for position in np.flatnonzero(np.isin(window, heads))[::-1]:
            after = n - 1 - position  # tokens after the head
            longest = -1
            for tail in breakers[int(window[position])]:
                if longest < len(tail) <= after and tuple(window[position + 1 : position + 1 + len(tail)]) == tail:
                    longest = len(tail)
            if longest >= 0:
                return after - longest
    return n


def _repeats(window: np.ndarray, limit: int, allowed_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token that would extend a repeat of at least allowed_length, with the longest such repeat.

    For every earlier position j, the repeat length there is how many tokens
    ending at j match the tokens ending the window (at most `limit`); the
    token after j would extend it.
    """
    n = window.size
    latest = window[::-1]  # latest[0] is the last token
    # Shift k compares latest[m] with latest[m + k]: a match of length L means the L tokens
    # ending k positions back equal the last L tokens. Follow all shifts at once while they
    # still match: cheap on ordinary text, where matches end within a few tokens.
    lengths = np.zeros(n, dtype=np.int64)
    alive = np.arange(1, n)
    for m in range(min(limit, _VECTOR_ROUNDS)):
        alive = alive[alive + m < n]
        alive = alive[latest[alive + m] == latest[m]]
        if alive.size == 0:
            break
        lengths[alive] += 1
    else:
        if alive.size and limit > _VECTOR_ROUNDS:  # long repeats (text in a loop): linear time instead
            lengths = np.minimum(_z_function(latest.tolist()), limit)
    shifts = np.flatnonzero(lengths[1:] >= allowed_length) + 1
    followers = latest[shifts - 1]  # the token after the repeat that ends k back
    tokens, inverse = np.unique(followers, return_inverse=True)
    longest = np.zeros(tokens.size, dtype=np.int64)
    np.maximum.at(longest, inverse, lengths[shifts])
    return tokens.astype(np.int64), longest


# Rounds of the vectorised match before the linear-time Z-function takes over.
_VECTOR_ROUNDS = 16


def _z_function(seq: list[int]) -> list[int]:
    """z[k]: the length of the longest common prefix of seq and seq[k:] (z[0] = 0), in O(len(seq)).

    Matches found earlier cover later shifts: inside the rightmost match
    [left, right), seq[k:] starts as seq[k - left:] does, so only what lies
    beyond `right` is compared, and each token is passed over once.
    """
    n = len(seq)
    z = [0] * n
    left = right = 0
    for k in range(1, n):
        length = min(right - k, z[k - left]) if k < right else 0
        while k + length < n and seq[length] == seq[k + length]:
            length += 1
        z[k] = length
        if k + length > right:
            left, right = k, k + length
    return z
