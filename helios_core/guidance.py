"""llguidance's view of each model: one tokenizer per model, built on first use and dropped with it,
its compiled grammars, and the process's thread pool for computing masks."""

from __future__ import annotations

import ctypes
import os
import re
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import llguidance
import numpy as np

from helios_core import _llama
from helios_core.errors import ClosedError, ConstraintError

if TYPE_CHECKING:
    from helios_core.model import Model
    from helios_core.vocab import TokenPieces

# llguidance's error messages otherwise carry its parser state and the whole grammar.
LIMITS = llguidance.LLParserLimits(verbose_errors=False)

# Compiled matchers kept per model, keyed by grammar: a request with a schema
# seen before starts from a copy (20 us) instead of a compile (1 ms to 1 s).
COMPILED_PER_MODEL = 64


def tokenizer_for(model: Model) -> llguidance.LLTokenizer:
    """llguidance's tokenizer of `model`'s vocabulary: built on first use (about 1.2 s for Gemma's), then shared.

    It calls into the model's vocabulary: use it only while holding `model.handle()`.
    """
    return model_guidance(model).tokenizer(model)


class ModelGuidance:
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
        template = llguidance.LLMatcher(tokenizer, grammar, log_level=0, limits=LIMITS)  # releases the GIL
        del handle
        if template.is_error():
            raise ConstraintError(error_message(template.get_error()))
        with self._lock:
            self._compiled[grammar] = template
            while len(self._compiled) > COMPILED_PER_MODEL:
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


def model_guidance(model: Model) -> ModelGuidance:
    with _guidance_lock:
        guidance = _guidance_by_model.get(model)
        if guidance is None:
            guidance = _guidance_by_model[model] = ModelGuidance()
            model.adopt(guidance)
    guidance.tokenizer(model)  # built, or ClosedError
    return guidance


# llguidance's own default: 80% of the CPUs, at most 32 (a single thread on 2 CPUs).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_POOL_THREADS = min(32, _CPUS * 4 // 5)
_executor_instance: llguidance.LLExecutor | None = None


def shared_executor() -> llguidance.LLExecutor | None:
    """The process's shared pool for compute_masks; None where it would have fewer than two threads."""
    global _executor_instance
    if _POOL_THREADS < 2:
        return None
    if _executor_instance is None:
        with _guidance_lock:
            if _executor_instance is None:
                _executor_instance = llguidance.LLExecutor(_POOL_THREADS)
    return _executor_instance


def error_message(error: str) -> str:
    """llguidance's message without the parser state (or its <non-verbose/> placeholder) it may append."""
    return re.split(r"<state>|<non-verbose/>", error, maxsplit=1)[0].strip()
