"""Text out of tokens: the incremental detokenizer and streaming stop strings.

Both do O(1) work per generated token (bounded by the piece and the longest
stop string), never re-reading the completion so far.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from helios_core.vocab import Vocab


class IncrementalDetokenizer:
    """Token ids in, valid UTF-8 text pieces out.

    A token may carry part of a character (byte-fallback tokens for emoji
    and CJK): those bytes wait in the decoder until the character is whole,
    so every piece is valid text and the pieces concatenate to exactly the
    detokenized completion.
    """

    def __init__(self, vocab: Vocab):
        self._vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._texts = vocab.whole_texts  # most tokens' text is one lookup there, not a trip through the decoder
        self._split = False  # the decoder holds the first bytes of an unfinished character

    def feed(self, token: int) -> str:
        """Text that this token completes (may be empty while a character is split)."""
        if not self._split:
            text = self._texts.get(token)
            if text is not None:
                return text
        text = self._decoder.decode(self._vocab.token_to_piece(token))
        clean = not self._split
        self._split = bool(self._decoder.getstate()[0])
        if clean and not self._split:  # decoded from a clean state to a clean state: the same every time
            self._texts[token] = text
        return text

    def flush(self) -> str:
        """Whatever is left at the end; an unfinished character becomes U+FFFD."""
        self._split = False
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Streams text while holding back anything that may be the start of a stop string.

    Generation stops at the first stop string to appear (the earliest end; at
    equal ends, the one that starts first), and the text before it is the
    result; the stop string itself is never emitted.
    """

    def __init__(self, stops: Iterable[str] = ()):
        self.stops = [s for s in dict.fromkeys(stops) if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.stopped_by: str | None = None

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop string was hit)."""
        if not self.stops:
            return piece, False
        text = self._held + piece
        hit = _first_stop(text, self.stops)
        if hit is not None:
            start, stop = hit
            self._held = ""
            self.stopped_by = stop
            return text[:start], True
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Release held text at the end of generation (it never became a stop string)."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that begins some stop string."""
        for k in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0


def truncate_at_stop(text: str, stops: Iterable[str]) -> str:
    """The non-streamed result: `text` up to the first stop string to appear, exclusive."""
    stops = [s for s in stops if s]
    hit = _first_stop(text, stops) if stops else None
    return text if hit is None else text[: hit[0]]


def _first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """(start, stop) of the occurrence that ends first; at a tie, the longer one."""
    best: tuple[int, int, str] | None = None
    for stop in stops:
        start = text.find(stop)
        if start < 0:
            continue
        end = start + len(stop)
        if best is None or (end, start) < (best[0], best[1]):
            best = (end, start, stop)
    return None if best is None else (best[1], best[2])
