"""gpt-oss's harmony channels: `<|channel|>analysis<|message|>…<|end|>` is reasoning, `final` the answer.

The generation prompt ends with `<|start|>assistant`, so the model writes a
channel header first:

    <|channel|>analysis<|message|>REASONING<|end|><|start|>assistant<|channel|>final<|message|>ANSWER<|return|>

Text in a header (between `<|start|>` or `<|channel|>` and `<|message|>`) is
neither field; a message in the `analysis` channel is reasoning, one in any
other channel (`final`, `commentary`) answer. Output that does not open with
a header is all answer. The markers are control tokens of gpt-oss's
vocabulary: the sequence feeds their text (they print nothing).
"""

from __future__ import annotations

from helios_core.reasoning.contract import NOTHING, Phase, Split

MESSAGE = "<|message|>"
# What ends a message or opens a header.
BOUNDARIES = ("<|end|>", "<|start|>", "<|channel|>", "<|return|>", "<|call|>")
MARKERS = (*BOUNDARIES, MESSAGE, "<|constrain|>")
# What the engine writes to end the reasoning under a budget: the analysis message ends, the answer opens.
CLOSE = "<|end|><|start|>assistant<|channel|>final<|message|>"
_LONGEST = max(len(m) for m in MARKERS)


class HarmonySplitter:
    """Splits harmony output by channel; `phase` is START until the first header says which channel speaks."""

    def __init__(self, phase: Phase = Phase.START):
        self.phase = phase
        self._held = ""
        self._header: str | None = ""  # the header's text so far; None inside a message
        self._raw = False  # the output opened with no header: all of it is answer, as written

    def feed(self, text: str) -> Split:
        if self._raw:
            return Split(content=text) if text else NOTHING
        buffered, self._held = self._held + text, ""
        out = NOTHING
        while buffered:
            if self._header is not None:
                if self.phase is Phase.START and not _could_open(self._header + buffered):
                    self._raw, self.phase = True, Phase.ANSWER
                    return Split(content=self._header + buffered)
                end = buffered.find(MESSAGE)
                if end < 0:
                    keep = _partial(buffered, (MESSAGE,))
                    self._header += buffered[: len(buffered) - keep]
                    self._held = buffered[len(buffered) - keep :]
                    return out
                channel = (self._header + buffered[:end]).rpartition("<|channel|>")[2].split()
                self.phase = Phase.REASONING if channel[:1] == ["analysis"] else Phase.ANSWER
                self._header = None
                buffered = buffered[end + len(MESSAGE) :]
                continue
            end, marker = _first(buffered, BOUNDARIES)
            if end < 0:
                keep = _partial(buffered, BOUNDARIES)
                self._held = buffered[len(buffered) - keep :]
                return out + self._message(buffered[: len(buffered) - keep])
            out = out + self._message(buffered[:end])
            self._header = ""  # what follows a message's end is a header, up to its <|message|>
            buffered = buffered[end:] if marker == "<|channel|>" else buffered[end + len(marker) :]
        return out

    def finish(self) -> Split:
        held, self._held = self._held, ""
        if self.phase is Phase.START:
            self.phase = Phase.ANSWER
            return Split(content=(self._header or "") + held)
        return NOTHING if self._header is not None else self._message(held)

    def _message(self, text: str) -> Split:
        if not text:
            return NOTHING
        return Split(reasoning=text) if self.phase is Phase.REASONING else Split(content=text)


def _could_open(text: str) -> bool:
    """Whether text written before any header may still be one (whitespace, or a header's opening marker)."""
    stripped = text.lstrip()
    return any(stripped.startswith(m) or m.startswith(stripped) for m in ("<|channel|>", "<|start|>"))


def _first(text: str, markers: tuple[str, ...]) -> tuple[int, str]:
    found = [(i, m) for m in markers if (i := text.find(m)) >= 0]
    return min(found) if found else (-1, "")


def _partial(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `markers`."""
    for k in range(min(len(text), _LONGEST - 1), 0, -1):
        tail = text[-k:]
        if any(m.startswith(tail) and m != tail for m in markers):
            return k
    return 0
