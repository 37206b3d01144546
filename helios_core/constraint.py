"""Constraints: generated text that must match a JSON schema, a regular expression or a grammar.

A `Constraint` is what a request asks for: immutable, checked when it is
made (a bad schema raises ConstraintError with llguidance's message), and
shareable by any number of requests and models. `constraint.processor(model)`
makes the per-request part, a `ConstraintProcessor`: an ordinary
LogitsProcessor (sampling.py) with its own matcher, which follows the
tokens the request generates and sends every token the constraint forbids
to -inf. Once the constraint is complete only end-of-generation tokens stay
allowed, so the request ends with finish_reason "stop".

    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    params = GenerationParams(processors=[json_schema(schema).processor(model)], temperature=0.0)

llguidance (the Rust engine behind llama.cpp's, vLLM's and SGLang's
structured output) does the matching. Its tokenizer is built from the
model's own vocabulary: about 1.7 s and 100 MB for Gemma's 262,144 tokens,
so it is built once per model on first use, shared by every request, and
dropped when the model closes. It keeps llama.cpp's vocabulary pointer and
calls `llama_tokenize` while it computes masks, so every call into
llguidance here holds the model's handle: a closed model raises
ClosedError, and a close() on another thread waits for the call in flight.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llguidance
import numpy as np
from llguidance.gbnf_to_lark import gbnf_to_lark, is_lark_syntax

from helios_core.errors import ConstraintError
from helios_core.guidance import LIMITS, error_message, model_guidance, shared_executor, tokenizer_for
from helios_core.sampling import SamplingState

if TYPE_CHECKING:
    from helios_core.model import Model

__all__ = [
    "Constraint",
    "ConstraintError",
    "ConstraintProcessor",
    "compute_masks",
    "grammar",
    "json_object",
    "json_schema",
    "regex",
    "tokenizer_for",
]

# JSON is written as Python's json.dumps writes it, with no free whitespace:
# a free-whitespace grammar lets a small model emit newlines forever (greedy
# Gemma 3 270M does). A schema may still ask for it with
# {"x-guidance": {"whitespace_flexible": true}}.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class Constraint:
    """A checked constraint, independent of any model. Make one with json_schema(), regex() or grammar().

    kind: "json_schema", "regex", "lark" or "gbnf" (converted to Lark).
    source: the schema (as JSON text), pattern or grammar as given.
    """

    kind: str
    source: str
    _grammar: str = field(repr=False, compare=False)

    def validate(self, model: Model) -> None:
        """Compile against the model's vocabulary; raises ConstraintError if llguidance refuses.

        Call it before admitting a request (a server's 400): what the grammar
        says about the vocabulary, such as a special token it names, is only
        checked here. The compiled grammar is kept, so processor() then costs a copy.
        """
        model_guidance(model).matcher(model, self._grammar)

    def processor(self, model: Model) -> ConstraintProcessor:
        """A fresh processor for one request on `model` (never share one between requests)."""
        return ConstraintProcessor(model, self)


def json_schema(schema: Mapping | bool | str) -> Constraint:
    """Output that is one JSON value valid against `schema` (a dict, or its JSON text)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise ConstraintError(f"the JSON schema is not valid JSON: {error}") from None
    if schema is True:  # JSON Schema's "anything"; llguidance's options need an object to sit in
        schema = {}
    elif schema is False:
        raise ConstraintError("the JSON schema false allows no value at all")
    elif not isinstance(schema, Mapping):
        raise ConstraintError(f"a JSON schema is an object or a boolean, not {type(schema).__name__}")
    try:
        source = json.dumps(schema)
    except (TypeError, ValueError) as error:
        raise ConstraintError(f"the JSON schema cannot be written as JSON: {error}") from None
    try:
        grammar_text = llguidance.LLMatcher.grammar_from_json_schema(source, _JSON_OPTIONS)
    except ValueError as error:
        raise ConstraintError(f"JSON schema: {error}") from None
    return _checked("json_schema", source, grammar_text)


def json_object() -> Constraint:
    """Any JSON object (OpenAI's response_format {"type": "json_object"})."""
    return json_schema({"type": "object"})


def regex(pattern: str) -> Constraint:
    """Output that matches `pattern` as a whole (Rust regex syntax, as Python's for the common cases)."""
    return _checked("regex", pattern, llguidance.LLMatcher.grammar_from_regex(pattern))


def grammar(text: str) -> Constraint:
    """Output that `text` derives: a Lark grammar (llguidance's dialect, rule `start`) or llama.cpp GBNF (`root ::=`).

    GBNF is told apart by its `name ::=` rules and converted to Lark by llguidance's converter.
    """
    if not is_lark_syntax(text) and _GBNF_RULE.search(text):
        try:
            lark = gbnf_to_lark(text)
        except Exception as error:  # the converter raises its own parse errors and plain ones
            raise ConstraintError(f"GBNF grammar: {error}") from None
        return _checked("gbnf", text, llguidance.LLMatcher.grammar_from_lark(lark))
    return _checked("lark", text, llguidance.LLMatcher.grammar_from_lark(text))


_GBNF_RULE = re.compile(r"(?m)^\s*[A-Za-z][\w-]*\s*::=")


class ConstraintProcessor:
    """The per-request part of a Constraint: a LogitsProcessor over one llguidance matcher.

    Each call consumes the tokens generated since the previous call
    (state.tokens after state.n_prompt), then returns a copy of the logits
    with every forbidden token at -inf. A token the matcher refuses (a
    sampler that ignored the mask) or a state with no way forward raises
    ConstraintError; a closed model raises ClosedError.

    The mask for the next call may be computed ahead, for many processors
    at once and with the GIL released: see compute_masks(). The engine's
    scheduler does so each step for every constrained slot it samples;
    called on its own, the processor computes its mask itself.
    """

    def __init__(self, model: Model, constraint: Constraint):
        self.constraint = constraint
        self._model = model
        guidance = model_guidance(model)
        self._matcher = guidance.matcher(model, constraint._grammar)
        self._n_vocab = guidance.n_vocab
        self._eos = guidance.eos
        self._eog = guidance.eog
        self._eog_words, self._eog_bits = guidance.eog_words, guidance.eog_bits
        self._mask = np.zeros(_mask_words(self._n_vocab), dtype=np.uint32)
        self._n_consumed = 0  # generated tokens the matcher has seen
        self._last = -1  # the last of them, to tell a processor reused for another request
        self._ready: np.ndarray | None = None  # a mask computed ahead for the current position
        # Generated tokens before the constrained text (a reasoning section), which the matcher never sees.
        self.skip = 0

    @property
    def matcher(self) -> llguidance.LLMatcher:
        """The llguidance matcher (for batched mask computation; do not advance it yourself)."""
        return self._matcher

    @property
    def is_accepting(self) -> bool:
        """True when the text so far is complete: ending here satisfies the constraint."""
        return self._matcher.is_accepting()

    def __call__(self, logits: np.ndarray, state: SamplingState) -> np.ndarray:
        if logits.shape != (self._n_vocab,):
            raise ValueError(f"logits of shape {logits.shape}, but the model's vocabulary has {self._n_vocab} tokens")
        handle = self._model.handle()  # raises ClosedError; keeps the vocabulary alive until we return
        self.advance(state.tokens[state.n_prompt :])
        mask, self._ready = self._ready, None
        if mask is None:
            self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
            mask = self._mask
        self._check()
        del handle
        return self._masked(logits, mask)

    def advance(self, generated: np.ndarray) -> None:
        """Feed the matcher the tokens of `generated` (all generated so far, `skip` first) it has not seen yet."""
        generated = generated[self.skip :]
        n = len(generated)
        if n < self._n_consumed or (self._n_consumed and int(generated[self._n_consumed - 1]) != self._last):
            raise ConstraintError(
                "this constraint processor already followed another generation; make one per request "
                "with constraint.processor(model)"
            )
        if n == self._n_consumed:
            return
        new = [int(t) for t in generated[self._n_consumed :]]
        handle = self._model.handle()
        # The matcher knows one end-of-generation token; any of the model's others stands for it.
        ok = self._matcher.consume_tokens([self._eos if t in self._eog else t for t in new])
        del handle
        self._last = new[-1]
        self._n_consumed = n
        self._ready = None
        if not ok:
            raise ConstraintError(
                f"token {new[-1]} does not continue the constraint ({self.constraint.kind}): "
                f"{error_message(self._matcher.get_error())}"
            )

    # --- helpers -----------------------------------------------------------

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ConstraintError(
                f"the output can no longer satisfy the constraint ({self.constraint.kind}): "
                f"{error_message(self._matcher.get_error())}"
            )

    def _masked(self, logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A copy of logits, -inf where `mask` has a 0 bit (uint32 words: bit i of word w is token 32w + i).

        NumPy's masked copy costs about twice as much when it writes most
        entries as when it writes few, so it writes whichever side is smaller.
        """
        eos_word, eos_bit = divmod(self._eos, 32)
        if (int(mask[eos_word]) >> eos_bit) & 1:
            mask[self._eog_words] |= self._eog_bits  # complete: every end-of-generation token ends it
        if np.count_nonzero(mask) * 4 < mask.size:  # few allowed (a forced key, a number): keep those
            allowed = np.unpackbits(mask.view(np.uint8), count=self._n_vocab, bitorder="little").view(bool)
            out = np.full(self._n_vocab, _NEG_INF, dtype=np.float32)
            np.copyto(out, logits, where=allowed)
        else:  # most allowed (inside a string): drop the rest
            banned = np.unpackbits((~mask).view(np.uint8), count=self._n_vocab, bitorder="little").view(bool)
            out = logits.copy()
            np.copyto(out, _NEG_INF, where=banned)
        return out


def compute_masks(
    items: Sequence[tuple[ConstraintProcessor, np.ndarray]], executor: llguidance.LLExecutor | None = None
) -> None:
    """Compute the next mask of many processors in one llguidance call, with the GIL released.

    items: (processor, generated tokens so far) pairs, e.g. one per constrained
    slot of a batch, before their logits are processed; a processor at most
    once. Each processor is advanced to its tokens, and its next call uses
    the mask computed here (if it is called at that same position).
    executor: an llguidance.LLExecutor, whose threads compute the masks in
    parallel. By default, one shared by the process where this machine has
    the CPUs for a pool of two threads or more; otherwise, and for a single
    processor, the masks are computed one after another on this thread (each
    with the GIL released): a pool of one thread runs nothing in parallel,
    and handing the work to it measured no faster on 2 CPUs, often slower
    (bench_constrained).
    """
    if not items:
        return
    for processor, generated in items:
        processor.advance(generated)
    n_words = items[0][0]._mask.size
    if any(p._mask.size != n_words for p, _ in items):
        raise ValueError("compute_masks needs processors of models with one vocabulary size")
    masks = np.zeros((len(items), n_words), dtype=np.uint32)
    handles = [p._model.handle() for p, _ in items]  # every model stays open until the masks are done
    executor = executor or shared_executor()
    if executor is None or len(items) == 1:
        for mask, (processor, _) in zip(masks, items, strict=True):
            processor._matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
    else:
        executor.unsafe_compute_mask_ptr(
            [(p._matcher, i) for i, (p, _) in enumerate(items)], masks.ctypes.data, masks.shape[1] * 4, len(items)
        )
    del handles
    for i, (processor, _) in enumerate(items):
        processor._ready = masks[i]


# --- helpers ---------------------------------------------------------------------


def _checked(kind: str, source: str, grammar_text: str) -> Constraint:
    """A Constraint, once llguidance has compiled its grammar (without a vocabulary)."""
    error = llguidance.LLMatcher.validate_grammar(grammar_text, None, limits=LIMITS)
    if error:
        raise ConstraintError(error_message(error))
    return Constraint(kind, source, grammar_text)


def _mask_words(n_vocab: int) -> int:
    return (n_vocab + 31) // 32
