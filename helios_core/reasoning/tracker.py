"""One sequence's reasoning: its text split as generated, its reasoning tokens counted, its budget kept.

The scheduler's SequenceState owns one per request with a ReasoningPlan. For
every token it accepts it calls `feed(token, text)`; the tracker answers with
the reasoning and answer text the token settles. Under a thinking budget, once
`budget` tokens were generated inside the section, the tracker queues the
tokens of the format's closing text in `forced`: the sequence takes those next
instead of sampling (under speculation a draft that disagrees is refused, as
any), and the model goes on to the answer.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from helios_core.reasoning.contract import Phase, Split

if TYPE_CHECKING:
    from helios_core.reasoning import ReasoningPlan
    from helios_core.vocab import Vocab


class ReasoningTracker:
    """Follows one generation through its reasoning section.

    budget: most tokens generated inside the section before the engine closes it; None or
    negative: no limit; 0: closed at once (where the section is open, or as soon as it opens).
    tokens: reasoning tokens so far, for usage: every generated token up to and including the one
    that ended the section (the opening marker and any forced closing ones too).
    answer_from: how many generated tokens came before the answer; None until the answer starts.
    """

    def __init__(self, plan: ReasoningPlan, vocab: Vocab, budget: int | None = None):
        fmt = plan.format
        self.splitter = fmt.splitter(plan.phase)
        self.budget = budget if budget is not None and budget >= 0 else None
        self.forced: deque[int] = deque()
        self.tokens = 0
        self.answer_from: int | None = 0 if plan.phase is Phase.ANSWER else None
        self._specials = vocab.control_tokens(fmt.markers)
        self._closing = _tokens(vocab, fmt.close) if self.budget is not None else []
        opening = _tokens(vocab, fmt.open)
        self.open_token: int | None = opening[0] if len(opening) == 1 else None
        # Harmony's output always opens with a channel header: no constraint may apply before one says "final".
        self.header_first = not fmt.open
        self._n = 0  # tokens fed
        self._inside = 0  # tokens fed inside the section, for the budget
        self._closed = False  # the budget closed the section already: never twice
        self._keep_budget()

    @property
    def phase(self) -> Phase:
        return self.splitter.phase

    def feed(self, token: int, text: str) -> Split:
        """The reasoning and answer text that `token` (whose detokenized text is `text`) settles."""
        before = self.splitter.phase
        split = self.splitter.feed(text + self._specials.get(token, ""))
        after = self.splitter.phase
        self._n += 1
        if before is Phase.REASONING:
            self._inside += 1
        if Phase.REASONING in (before, after):
            self.tokens = self._n
        if after is Phase.ANSWER and self.answer_from is None:
            # A section that ended: the answer follows this token. No section: this token starts the answer.
            self.answer_from = self._n if self.tokens else self._n - 1
        self._keep_budget()
        return split

    def finish(self) -> Split:
        """What the end of the output settles (held-back text)."""
        return self.splitter.finish()

    def _keep_budget(self) -> None:
        if (
            self.budget is not None
            and not self._closed
            and self.splitter.phase is Phase.REASONING
            and self._inside >= self.budget
        ):
            self._closed = True
            self.forced.extend(self._closing)


def _tokens(vocab: Vocab, text: str) -> list[int]:
    return vocab.tokenize(text, add_special=False, parse_special=True) if text else []
