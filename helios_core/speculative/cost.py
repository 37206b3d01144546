"""What a verify step costs by its logits rows, and how many drafted tokens each slot verifies (`allocate`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    """What one decode costs, in plain one-token steps, by how many logits rows it computes.

    On Gemma's 262,144-token vocabulary the output head is most of the work of
    a step, and llama.cpp's CPU kernels (the repacked Q8_0/Q4 GEMMs of ggml)
    multiply it four rows at a time: the rows of whole groups of `quantum`
    share each pass over the head's weights, and the rows left over take a
    slower path, the first of them about a whole pass. benchmarks/
    bench_verify_rows.py measured on the default model, 2 threads (AVX-512):
    1 row 1.0, 2 rows 2.0, 3 rows 2.4, 4 rows 2.47, 5 rows 3.83, 6 rows 4.12,
    7 rows 4.63, 8 rows 3.72, 9 rows 4.91, 12 rows 4.75, 13 rows 6.03,
    16 rows 6.26, 17 rows 7.36, 33 rows 10.6; the defaults fit these. So
    draft lengths that fill whole groups are nearly free beside those that
    leave a row over, and short drafts on their own do not pay.
    """

    quantum: int = 4
    first_group: float = 1.3  # a step with whole groups: this, plus per_group for each
    per_group: float = 1.15
    first_spare: float = 1.25  # the first row beside whole groups, then each further one
    next_spare: float = 0.45
    lone_row: float = 1.0  # each row of a step too small for a whole group

    def __call__(self, rows: int) -> float:
        groups, rest = divmod(rows, self.quantum)
        if not groups:
            return self.lone_row * rest
        spares = self.first_spare + self.next_spare * (rest - 1) if rest else 0.0
        return self.first_group + self.per_group * groups + spares

    def best_length(self, acceptance: float, k_max: int) -> int:
        """The draft length that gives one sequence decoding alone the most tokens per cost."""
        return allocate([(k_max, acceptance)], 1, k_max, self)[0]


def allocate(offers: list[tuple[int, float]], rows: int, budget: int, cost: StepCost) -> list[int]:
    """How many drafted tokens each offer puts into a step: the most expected tokens per cost.

    offers: per sequence that can draft, (tokens it can draft, acceptance), where
    acceptance is the chance that each drafted token is kept given the one before
    was. rows: logits rows the step has without drafts (one per generating
    sequence). A sequence's j-th drafted token yields acceptance**j tokens in
    expectation, less with each, so drafted tokens are taken greedily, the most
    likely next, and the allocation kept is the best seen on the way: with
    nothing worth its rows, no drafts at all.
    """
    lengths = [0] * len(offers)
    gains = [a if most > 0 else 0.0 for most, a in offers]  # what each offer's next drafted token yields
    expected = float(rows)
    best_value, best = expected / cost(rows), list(lengths)
    for _ in range(budget):
        gain = max(gains, default=0.0)
        if gain <= 0.0:
            break
        i = gains.index(gain)
        lengths[i] += 1
        most, a = offers[i]
        gains[i] = gain * a if lengths[i] < most else 0.0
        expected += gain
        rows += 1
        value = expected / cost(rows)
        if value > best_value:
            best_value, best = value, list(lengths)
    return best


# Acceptance is estimated per bucket of a drafter's evidence (prompt lookup: how many tokens
# matched; 2-3, 4-7, 8-15, 16-31, 32 and more; 0 for a draft model), greedy and sampled requests
# apart. Before drafts are judged, a bucket believes these rates, worth PRIOR_WEIGHT judged tokens.
# The greedy ones are what prompt lookup's drafts would have kept of plain greedy decoding on the
# default model (the benchmark's copy prompts and the tests' 30 prompts: 0.77-0.94 for 2-3 matched
# tokens, 0.91-0.94 for 4-7, 0.96-0.99 for 8-15, 0.99 and more past that); the sampled ones are
# guesses, and a draft model starts hopeful so that it is tried.
