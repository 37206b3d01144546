"""What a reasoning parser is: a splitter of generated text into reasoning and answer.

    Splitter.feed(text) -> Split      (the reasoning and the answer text this piece settles)
    Splitter.finish()   -> Split      (what the end of the text settles: held-back text)

A splitter holds back only text that may be the start of a marker (at most the
longest marker, less one character), so each piece costs O(len(piece) + that),
and a marker cut across pieces never reaches either field.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Phase(Enum):
    """Where the text stands: before anything decided, inside the reasoning, or in the answer."""

    START = "start"  # nothing but whitespace yet: the section may still open
    REASONING = "reasoning"
    ANSWER = "answer"


@dataclass(frozen=True)
class Split:
    """What one piece of generated text settles: its reasoning part and its answer part (either may be "")."""

    reasoning: str = ""
    content: str = ""

    def __add__(self, other: Split) -> Split:
        return Split(self.reasoning + other.reasoning, self.content + other.content)


NOTHING = Split()


class Splitter(Protocol):
    """One generation's text, piece by piece, into reasoning and answer."""

    phase: Phase

    def feed(self, text: str) -> Split: ...

    def finish(self) -> Split: ...
