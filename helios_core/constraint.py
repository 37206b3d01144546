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

import ctypes
import json
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llguidance
import numpy as np
from llguidance.gbnf_to_lark import gbnf_to_lark, is_lark_syntax

from helios_core import _llama
from helios_core.errors import ClosedError, ConstraintError
from helios_core.sampling import SamplingState

if TYPE_CHECKING:
    from helios_core.model import Model
    from helios_core.vocab import TokenPieces

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

# llguidance's error messages otherwise carry its parser state and the whole grammar.
_LIMITS = llguidance.LLParserLimits(verbose_errors=False)

# Compiled matchers kept per model, keyed by grammar: a request with a schema
# seen before starts from a copy (20 us) instead of a compile (1 ms to 1 s).
_COMPILED_PER_MODEL = 64

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
        _guidance(model).matcher(model, self._grammar)

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
        guidance = _guidance(model)
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
                f"{_message(self._matcher.get_error())}"
            )

    # --- helpers -----------------------------------------------------------

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ConstraintError(
                f"the output can no longer satisfy the constraint ({self.constraint.kind}): "
                f"{_message(self._matcher.get_error())}"
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
    executor = executor or _executor()
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


def tokenizer_for(model: Model) -> llguidance.LLTokenizer:
    """llguidance's tokenizer of `model`'s vocabulary: built on first use (about 1.2 s for Gemma's), then shared.

    It calls into the model's vocabulary: use it only while holding `model.handle()`.
    """
    return _guidance(model).tokenizer(model)


# --- one llguidance tokenizer per model ------------------------------------------


class _ModelGuidance:
    """llguidance's view of one model: its tokenizer, end-of-generation tokens and compiled grammars.

    Registered with the model (Model.adopt), so model.close() drops the
    tokenizer's memory. It holds no reference to the model itself: it is a
    value of a WeakKeyDictionary keyed by the model.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._closed = False
        self.n_vocab = 0
        self.eos = -1
        self.eog: frozenset[int] = frozenset()
        self.eog_words = self.eog_bits = np.zeros(0, dtype=np.uint32)

    def tokenizer(self, model: Model) -> llguidance.LLTokenizer:
        tokenizer = self._tokenizer
        if tokenizer is None:
            with self._lock:  # one build per model, even when requests arrive together
                if self._tokenizer is None:
                    self._build(model)
                tokenizer = self._tokenizer
        if self._closed:
            raise ClosedError(f"model {model.path.name} is closed")
        return tokenizer

    def matcher(self, model: Model, grammar: str) -> llguidance.LLMatcher:
        """A fresh matcher for `grammar`, copied from the compiled one kept for this model."""
        tokenizer = self.tokenizer(model)
        with self._lock:
            template = self._compiled.get(grammar)
            if template is not None:
                self._compiled.move_to_end(grammar)
                return template.deep_copy()
        handle = model.handle()
        template = llguidance.LLMatcher(tokenizer, grammar, log_level=0, limits=_LIMITS)  # releases the GIL
        del handle
        if template.is_error():
            raise ConstraintError(_message(template.get_error()))
        with self._lock:
            self._compiled[grammar] = template
            while len(self._compiled) > _COMPILED_PER_MODEL:
                self._compiled.popitem(last=False)
            return template.deep_copy()

    def close(self) -> None:
        """Drop the tokenizer and compiled grammars (called by model.close(), from any thread)."""
        self._closed = True
        self._tokenizer = None
        self._compiled = OrderedDict()

    def _build(self, model: Model) -> None:
        handle = model.handle()
        vocab = _llama.llama_model_get_vocab(handle.ptr)
        n_vocab = _llama.llama_vocab_n_tokens(vocab)
        eot, eos = _llama.llama_vocab_eot(vocab), _llama.llama_vocab_eos(vocab)
        # As llama.cpp's own llguidance sampler: the turn's end where the model has one.
        self.eos = eot if eot >= 0 else eos
        if self.eos < 0:
            raise ConstraintError("the model has no end-of-generation token, so no constraint can end its output")
        self.eog = frozenset(model.vocab.eog_tokens)
        words = np.array(sorted(self.eog), dtype=np.int64) // 32
        bits = np.array([1 << (t % 32) for t in sorted(self.eog)], dtype=np.uint32)
        self.eog_words = np.unique(words)
        self.eog_bits = np.array([np.bitwise_or.reduce(bits[words == w]) for w in self.eog_words], dtype=np.uint32)
        tokenize = ctypes.cast(_llama.llama_tokenize, ctypes.c_void_p).value
        tokenizer = llguidance.LLTokenizer.from_llamacpp(
            tokens=_token_pieces(model.vocab.pieces), vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=self.eos
        )
        del handle
        self.n_vocab = n_vocab
        if not self._closed:  # a close() during the build must not keep 100 MB alive
            self._tokenizer = tokenizer


def _token_pieces(pieces: TokenPieces) -> list[bytes]:
    """Each token's bytes; tokens that print nothing as text (control tokens) get their
    special text after llguidance's 0xFF marker, so grammars can name but never spell them.

    This is what llama.cpp's common/llguidance.cpp does, and unlike marking
    every "<...>"-looking user-defined token: those (Gemma's "<table>", runs
    of spaces) are text that llama_tokenize produces from plain input.
    """
    tokens = pieces.special_list()
    for token in np.flatnonzero(pieces.control).tolist():
        tokens[token] = b"\xff" + tokens[token]
    return tokens


_guidance_by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_guidance_lock = threading.Lock()


def _guidance(model: Model) -> _ModelGuidance:
    with _guidance_lock:
        guidance = _guidance_by_model.get(model)
        if guidance is None:
            guidance = _guidance_by_model[model] = _ModelGuidance()
            model.adopt(guidance)
    guidance.tokenizer(model)  # built, or ClosedError
    return guidance


# llguidance's own default: 80% of the CPUs, at most 32 (a single thread on 2 CPUs).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_POOL_THREADS = min(32, _CPUS * 4 // 5)
_executor_instance: llguidance.LLExecutor | None = None


def _executor() -> llguidance.LLExecutor | None:
    """The process's shared pool for compute_masks; None where it would have fewer than two threads."""
    global _executor_instance
    if _POOL_THREADS < 2:
        return None
    if _executor_instance is None:
        with _guidance_lock:
            if _executor_instance is None:
                _executor_instance = llguidance.LLExecutor(_POOL_THREADS)
    return _executor_instance


# --- helpers ---------------------------------------------------------------------


def _checked(kind: str, source: str, grammar_text: str) -> Constraint:
    """A Constraint, once llguidance has compiled its grammar (without a vocabulary)."""
    error = llguidance.LLMatcher.validate_grammar(grammar_text, None, limits=_LIMITS)
    if error:
        raise ConstraintError(_message(error))
    return Constraint(kind, source, grammar_text)


def _message(error: str) -> str:
    """llguidance's message without the parser state (or its <non-verbose/> placeholder) it may append."""
    return re.split(r"<state>|<non-verbose/>", error, maxsplit=1)[0].strip()


def _mask_words(n_vocab: int) -> int:
    return (n_vocab + 31) // 32
