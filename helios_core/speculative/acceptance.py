"""How likely a drafted token is kept: shared estimates by drafter evidence, and each slot's own record."""

from __future__ import annotations

from dataclasses import dataclass, field

PRIOR_RATE = {
    True: {0: 0.8, 1: 0.8, 2: 0.9, 3: 0.96, 4: 0.98, 5: 0.99},
    False: {0: 0.75, 1: 0.3, 2: 0.4, 3: 0.5, 4: 0.6, 5: 0.7},
}
PRIOR_WEIGHT = 4.0


def evidence_bucket(evidence: int) -> int:
    """0 for a drafter with no evidence (a draft model), else 1 + floor(log2(evidence / 2)), at most 5."""
    return 0 if evidence <= 0 else min(5, max(1, evidence.bit_length() - 1))


@dataclass
class _Verdicts:
    """Kept drafted tokens and refusals (drafts cut short), fading: the estimate of a geometric run."""

    kept: float = 0.0
    refused: float = 0.0

    def add(self, drafted: int, kept: int) -> None:
        self.kept += kept
        self.refused += kept < drafted

    def faded_rate(self, fade: float, prior: float, prior_weight: float) -> float:
        """Fade the counts once, then kept / (kept + refused), with `prior` worth prior_weight tokens."""
        self.kept *= fade
        self.refused *= fade
        return (self.kept + prior_weight * prior) / (self.kept + self.refused + prior_weight)


@dataclass
class AcceptanceRates:
    """What fraction of drafted tokens the target keeps, by kind of request and strength of evidence.

    A bucket's counts fade by FADE each time it is asked, so the table follows
    the last few hundred steps, and a bucket whose drafts stopped paying drifts
    back to its prior and is tried again. One table serves every slot of a
    scheduler.
    """

    counts: dict[tuple[bool, int], _Verdicts] = field(default_factory=dict)

    FADE = 0.995

    def rate(self, key: tuple[bool, int]) -> float:
        greedy, bucket = key
        return self.counts.setdefault(key, _Verdicts()).faded_rate(self.FADE, PRIOR_RATE[greedy][bucket], PRIOR_WEIGHT)

    def record(self, key: tuple[bool, int], drafted: int, kept: int) -> None:
        self.counts.setdefault(key, _Verdicts()).add(drafted, kept)


@dataclass
class SlotAcceptance(_Verdicts):
    """One request's own record of kept and refused drafts: adaptive k, per sequence.

    Its estimate leans on the shared table's rate for the evidence at hand
    (worth SHARED_WEIGHT tokens) and moves with what this request's drafts
    did: kept drafts raise it, so drafts grow; refused ones lower it below what
    pays, so the sequence stops drafting. The record fades by FADE every step
    it is asked, drafting or not, so a sequence that stopped drafting tries
    again some steps later.
    """

    SHARED_WEIGHT = 2.0
    FADE = 0.9

    def rate(self, shared: float) -> float:
        return self.faded_rate(self.FADE, shared, self.SHARED_WEIGHT)

    def record(self, drafted: int, kept: int) -> None:
        self.add(drafted, kept)
