"""Speculation: the scheduler's settings for speculative decoding, and the offer one sequence makes a step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from helios_core.speculative.acceptance import AcceptanceRates, SlotAcceptance, evidence_bucket
from helios_core.speculative.cost import StepCost
from helios_core.speculative.drafters import EMPTY, Drafter, DraftModel, PromptLookup


@dataclass
class Offer:
    """A sequence's drafted tokens for one step, before the step decides how many to verify."""

    draft: np.ndarray
    acceptance: float
    key: tuple[bool, int]  # the AcceptanceRates bucket the verdict is recorded under


@dataclass
class Speculation:
    """The scheduler's settings for speculative decoding, and what it has learnt of its drafts.

    drafter: PromptLookup() (the default) or a DraftModel.
    draft_max: the most tokens one slot drafts in a step.
    draft_budget: the most drafted tokens in one step over all slots.
    cost: what a step costs by its logits rows; with the acceptance estimates it decides
        how many tokens each slot verifies (`allocate`): none where drafts do not pay,
        fewer per slot when many slots generate and the batch is wide already.
    """

    drafter: PromptLookup | DraftModel = field(default_factory=PromptLookup)
    draft_max: int = 32
    draft_budget: int = 64
    cost: StepCost = field(default_factory=StepCost)
    rates: AcceptanceRates = field(default_factory=AcceptanceRates)

    def __post_init__(self):
        if self.draft_max < 1:
            raise ValueError(f"draft_max must be >= 1, got {self.draft_max}")
        if self.draft_budget < 1:
            raise ValueError(f"draft_budget must be >= 1, got {self.draft_budget}")

    def drafter_for(self, seq_id: int) -> Drafter:
        return self.drafter.for_sequence(seq_id)

    def offer(
        self, drafter: Drafter, record: SlotAcceptance, tokens: np.ndarray, k_max: int, greedy: bool
    ) -> Offer | None:
        """What one sequence could verify this step (at most k_max tokens), None for nothing.

        A drafter with `lookup` (prompt lookup) costs nothing to ask, so it is
        asked for k_max tokens and judged by its evidence; any other (a draft
        model pays a decode per token) is asked only for the tokens that pay
        for this sequence alone.
        """
        lookup = getattr(drafter, "lookup", None)
        draft, evidence = lookup(tokens, k_max) if lookup is not None else (None, 0)
        key = (greedy, evidence_bucket(evidence))
        acceptance = record.rate(self.rates.rate(key))
        if draft is None:
            k = self.cost.best_length(acceptance, k_max)
            draft = drafter.propose(tokens, k)[:k] if k else EMPTY
        return Offer(draft, acceptance, key) if draft.size else None

    def judged(self, record: SlotAcceptance, offer_key: tuple[bool, int], drafted: int, kept: int) -> None:
        """Take in how many of a verified draft's tokens were kept."""
        record.record(drafted, kept)
        self.rates.record(offer_key, drafted, kept)
