"""Reasoning models: the thinking section of an answer, told apart from the answer itself.

A `ReasoningFormat` is one way models write their reasoning, a module each:

    think     <think>REASONING</think>ANSWER   (DeepSeek-R1 and distills, Qwen3, QwQ, GLM, MiniMax, ...)
    gemma4    <|channel>thought REASONING<channel|>ANSWER   (Gemma 4; the same parser, other tags)
    harmony   <|channel|>analysis<|message|>REASONING<|end|>...<|channel|>final<|message|>ANSWER  (gpt-oss)

and "none" is no format: the text is all answer. `format_named(name)` takes a
name (llama-server's "deepseek" and vLLM's "deepseek_r1" / "qwen3" / "gpt_oss"
are aliases); `detect(template, vocab)` is what `--reasoning-format auto` picks:
a format only when the chat template writes its markers *and* the vocabulary
holds them as single tokens, so a model trained without the section is never
read as having one.

`plan_for(format, prompt_text)` is one request's `ReasoningPlan`: the format and
where the rendered prompt leaves the output (a template that opens the section
in its generation prompt, as DeepSeek-R1's does, makes the output start inside
the reasoning; one that closes it, as Qwen3's with enable_thinking false, makes
it start in the answer). A sequence follows its output with a `ReasoningTracker`
(tracker.py): the splitter, the reasoning token count and the thinking budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from helios_core.reasoning import harmony, think_tags
from helios_core.reasoning.contract import NOTHING, Phase, Split, Splitter
from helios_core.reasoning.tracker import ReasoningTracker

__all__ = [
    "FORMATS",
    "GEMMA4",
    "HARMONY",
    "NAMES",
    "NOTHING",
    "THINK",
    "Phase",
    "ReasoningFormat",
    "ReasoningPlan",
    "ReasoningTracker",
    "Split",
    "Splitter",
    "detect",
    "format_named",
    "plan_for",
    "resolve",
    "split_text",
]


@dataclass(frozen=True)
class ReasoningFormat:
    """One way of writing a reasoning section.

    open: the text that opens it ("" where a header does, as in harmony); close: what the engine
    writes to end it when a thinking budget runs out; markers: the texts some vocabularies hold as
    control tokens (printed as nothing, so the sequence feeds their text to the splitter).
    """

    name: str
    open: str
    close: str
    markers: tuple[str, ...]
    make: Callable[[Phase], Splitter]

    def splitter(self, phase: Phase = Phase.START) -> Splitter:
        return self.make(phase)

    def phase_after(self, prompt: str) -> Phase:
        """Where the output starts, given the rendered prompt it continues."""
        if not self.open:
            return Phase.START
        tail = prompt.rstrip()
        closing = self.close.strip()
        if tail.endswith(closing):
            return Phase.ANSWER
        return Phase.REASONING if tail.endswith(self.open) else Phase.START


GEMMA4 = ReasoningFormat(
    "gemma4",
    think_tags.GEMMA4_OPEN,
    think_tags.GEMMA4_CLOSE,
    ("<|channel>", "<channel|>"),
    lambda phase: think_tags.ThinkTagSplitter(phase, think_tags.GEMMA4_OPEN, think_tags.GEMMA4_CLOSE),
)
THINK = ReasoningFormat(
    "think",
    think_tags.OPEN,
    "\n" + think_tags.CLOSE + "\n\n",
    (think_tags.OPEN, think_tags.CLOSE),
    think_tags.ThinkTagSplitter,
)
HARMONY = ReasoningFormat("harmony", "", harmony.CLOSE, harmony.MARKERS, harmony.HarmonySplitter)
FORMATS = {f.name: f for f in (THINK, HARMONY, GEMMA4)}
_ALIASES = {"deepseek": THINK, "deepseek_r1": THINK, "qwen3": THINK, "gpt_oss": HARMONY, "gpt-oss": HARMONY}
NAMES = ("auto", "none", *FORMATS, *_ALIASES)


@dataclass(frozen=True)
class ReasoningPlan:
    """One request's reasoning: its format, and the phase its output starts in (from the rendered prompt)."""

    format: ReasoningFormat
    phase: Phase = Phase.START


def format_named(name: str) -> ReasoningFormat | None:
    """The format called `name` (None for "none"); ValueError naming the choices for anything else.

    "auto" is not a format: detect() resolves it against a template and a vocabulary.
    """
    if name == "none":
        return None
    found = FORMATS.get(name) or _ALIASES.get(name)
    if found is None:
        raise ValueError(f"unknown reasoning format {name!r}; choose one of {', '.join(NAMES)}")
    return found


def detect(template: str | None, single_token: Callable[[str], bool]) -> ReasoningFormat | None:
    """The format a Jinja chat template writes, if the vocabulary holds its markers as single tokens.

    template: the template's Jinja text (None for llama.cpp's built-in ones, which write none).
    single_token(text): whether the vocabulary spells `text` as one token.
    """
    if not template:
        return None
    if "<|channel|>" in template and all(single_token(m) for m in ("<|channel|>", "<|message|>")):
        return HARMONY
    if think_tags.GEMMA4_CLOSE in template and all(single_token(m) for m in GEMMA4.markers):
        return GEMMA4
    if think_tags.CLOSE in template and all(single_token(m) for m in THINK.markers):
        return THINK
    return None


def resolve(name: str, template: str | None, vocab) -> ReasoningFormat | None:
    """What `--reasoning-format name` means for a served model: "auto" detects from its template and vocabulary."""
    if name != "auto":
        return format_named(name)
    return detect(template, lambda text: len(vocab.tokenize(text, add_special=False, parse_special=True)) == 1)


def plan_for(fmt: ReasoningFormat | None, prompt: str) -> ReasoningPlan | None:
    """The plan for a request whose rendered prompt is `prompt`; None without a format."""
    return None if fmt is None else ReasoningPlan(fmt, fmt.phase_after(prompt))


def split_text(plan: ReasoningPlan, text: str) -> Split:
    """A whole text split at once (what a stream of its pieces adds up to)."""
    splitter = plan.format.splitter(plan.phase)
    return splitter.feed(text) + splitter.finish()
