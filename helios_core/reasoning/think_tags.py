"""`<think>…</think>`: DeepSeek-R1 and its distills, Qwen3, QwQ, GLM, MiniMax, SmolLM3, ... (and Gemma 4's tags)

The section opens with `<think>` as the first thing the model writes (after
whitespace), or in the prompt itself when the template's generation prompt
ends with it (DeepSeek-R1's does), and ends at `</think>`. `<think>` anywhere
later is answer text: a model without the section never has its answer
mistaken for reasoning. Whitespace around the reasoning and at the start of
the answer is dropped, as llama-server and vLLM drop it.
"""

from __future__ import annotations

from helios_core.reasoning.contract import NOTHING, Phase, Split

OPEN = "<think>"
CLOSE = "</think>"
# Gemma 4 writes its thinking as a "thought" channel: <|channel>thought\n...<channel|>.
GEMMA4_OPEN = "<|channel>thought"
GEMMA4_CLOSE = "<channel|>"


class ThinkTagSplitter:
    """Splits text at `open` / `close` markers; `phase` is where the prompt left the text (Phase.START if open)."""

    def __init__(self, phase: Phase = Phase.START, open: str = OPEN, close: str = CLOSE):
        self.phase = phase
        self._open, self._close = open, close
        self._held = ""  # a possible marker's start (START: the text so far)
        self._space = ""  # whitespace inside the reasoning, emitted once more reasoning follows
        self._fresh = True  # at the start of the reasoning or of the answer: whitespace is dropped

    def feed(self, text: str) -> Split:
        if self.phase is Phase.START:
            return self._start(text)
        if self.phase is Phase.REASONING:
            return self._reasoning(text)
        return self._answer(text)

    def finish(self) -> Split:
        held, self._held = self._held, ""
        if self.phase is Phase.START:
            self.phase = Phase.ANSWER
            return Split(content=held)  # whitespace, or a marker's start: the answer's own text
        if self.phase is Phase.REASONING:
            return Split(reasoning=self._emit(held, closing=True))  # cut short: the held text was no marker
        return NOTHING

    def _start(self, text: str) -> Split:
        buffered = self._held + text
        stripped = buffered.lstrip()
        if not stripped or (len(stripped) < len(self._open) and self._open.startswith(stripped)):
            self._held = buffered
            return NOTHING
        self._held = ""
        if stripped.startswith(self._open):
            self.phase = Phase.REASONING
            return self._reasoning(stripped[len(self._open) :])
        self.phase, self._fresh = Phase.ANSWER, False
        return Split(content=buffered)

    def _reasoning(self, text: str) -> Split:
        buffered = self._held + text
        end = buffered.find(self._close)
        if end >= 0:
            self._held = ""
            reasoning = self._emit(buffered[:end], closing=True)
            self.phase, self._fresh = Phase.ANSWER, True
            return Split(reasoning=reasoning) + self._answer(buffered[end + len(self._close) :])
        keep = _partial_suffix(buffered, self._close)
        self._held = buffered[len(buffered) - keep :]
        out = self._emit(buffered[: len(buffered) - keep])
        return Split(reasoning=out) if out else NOTHING

    def _emit(self, text: str, closing: bool = False) -> str:
        """The reasoning to emit now: whitespace waits until more reasoning follows it, and none at either end."""
        if self._fresh:
            text = text.lstrip()
            if not text:
                return ""
            self._fresh = False
        core = text.rstrip()
        if not core:
            self._space = "" if closing else self._space + text
            return ""
        out = self._space + core
        self._space = "" if closing else text[len(core) :]
        return out

    def _answer(self, text: str) -> Split:
        if self._fresh:
            text = text.lstrip()
            self._fresh = not text
        return Split(content=text) if text else NOTHING


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
