"""Speculative decoding: draft a few tokens cheaply, verify them in one pass over the weights.

One decode step reads every weight for one token per sequence, while a
chunk of several tokens shares that read. So a slot that can guess
its next tokens puts its last token plus k drafted ones into the step's batch
(a *verify chunk*, with logits for every row) and keeps as many as the model
agrees with, plus one token of the model's own: 1 to k + 1 tokens per step.

- Drafters propose the guesses (`Drafter.propose(tokens, k)`): `PromptLookup`
  copies what followed the earlier occurrence that matches the most of the
  text's end (no second model: extraction, editing, code and summaries repeat
  their input), `DraftModel` runs a second, smaller GGUF that shares the
  vocabulary, greedily, in a context of its own.
- `verify` takes drafted tokens in order with the acceptance rule of
  speculative sampling (Leviathan et al. 2023; Chen et al. 2023) for a
  deterministic drafter: the drafted token x is kept with probability p(x),
  where p is what the request's sampler would draw from at that row;
  otherwise the token is drawn from p with x removed. Either way the token is
  distributed exactly as p, so the output is distributed as without
  speculation (under greedy, p is a point mass: the longest prefix that agrees
  with the argmax is kept). Only a sampler that exposes its distribution
  (`sampler.distribution(logits, state)`, as the built-in chain does) can be
  verified this way; the scheduler decodes every other request normally.
- How many drafted tokens a step verifies is a bet on cost: each row of a
  verify chunk computes the whole output head, which on Gemma's 262k-token
  vocabulary is most of a step (`StepCost`). Each slot's chance of keeping a
  drafted token is estimated from its drafter's evidence (how long the
  copied match is) and from what its own drafts did (`AcceptanceRates`,
  `SlotAcceptance`), and `allocate` drafts the tokens that give the most
  expected tokens per cost, none when nothing pays: text with nothing to
  copy costs what plain decoding costs.

Modules: drafters, cost (StepCost, allocate), acceptance (the estimates),
speculation (Speculation, Offer: the scheduler's interface), verify.

The scheduler (engine.py) plans verify chunks, rolls the KV memory back over
refused positions and keeps the slot's cached tokens exact.
"""

from helios_core.speculative.acceptance import AcceptanceRates, SlotAcceptance, evidence_bucket
from helios_core.speculative.cost import StepCost, allocate
from helios_core.speculative.drafters import EMPTY, Drafter, DraftModel, PromptLookup, check_same_vocabulary
from helios_core.speculative.speculation import Offer, Speculation
from helios_core.speculative.verify import accept_drafted, can_verify, verify

__all__ = [
    "EMPTY",
    "AcceptanceRates",
    "DraftModel",
    "Drafter",
    "Offer",
    "PromptLookup",
    "SlotAcceptance",
    "Speculation",
    "StepCost",
    "accept_drafted",
    "allocate",
    "can_verify",
    "check_same_vocabulary",
    "evidence_bucket",
    "verify",
]
