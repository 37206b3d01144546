"""The tokenizer of a loaded model: text <-> token ids, pieces, special tokens.

All of llama.cpp's "buffer too small" protocols are handled here: a call
that returns a negative count is retried once with a buffer of that size.
llama.cpp documents tokenization as thread-safe, so the HTTP layer may
tokenize on its own threads while the engine thread decodes.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from helios_core import _llama
from helios_core.errors import TokenizeError

if TYPE_CHECKING:
    from helios_core.model import Model

_INT32_MIN = -(2**31)


class Vocab:
    """Token-level view of a model. Once the model is closed, every call raises ClosedError.

    Each method holds the model's handle (`_`) until llama.cpp returns, so a
    close() on another thread never frees the vocabulary under a call.
    """

    def __init__(self, model: Model):
        self._model = model
        self._ptr = _llama.llama_model_get_vocab(model.ptr)
        self.n_vocab: int = _llama.llama_vocab_n_tokens(self._ptr)
        self.bos: int = _llama.llama_vocab_bos(self._ptr)
        self.eos: int = _llama.llama_vocab_eos(self._ptr)
        self.eot: int = _llama.llama_vocab_eot(self._ptr)
        self.add_bos: bool = bool(_llama.llama_vocab_get_add_bos(self._ptr))
        self._pieces: dict[int, bytes] = {}

    # --- special tokens ----------------------------------------------------

    def is_eog(self, token: int) -> bool:
        """True for any end-of-generation token (eos, eot, and model-specific ones)."""
        _ = self._model.handle()
        return bool(_llama.llama_vocab_is_eog(self._ptr, token))

    def is_control(self, token: int) -> bool:
        _ = self._model.handle()
        self._check_token(token)  # llama.cpp aborts the process on an id outside the vocabulary
        return bool(_llama.llama_vocab_is_control(self._ptr, token))

    def token_attr(self, token: int) -> int:
        """The llama_token_attr bit flags of a token (see _llama.LLAMA_TOKEN_ATTR_*)."""
        _ = self._model.handle()
        self._check_token(token)
        return int(_llama.llama_vocab_get_attr(self._ptr, token))

    def token_text(self, token: int) -> str:
        """The vocabulary entry as stored in the GGUF (e.g. '▁hello'), not decoded text."""
        _ = self._model.handle()
        self._check_token(token)
        return _llama.llama_vocab_get_text(self._ptr, token).decode("utf-8", errors="replace")

    # --- text <-> tokens ---------------------------------------------------

    def tokenize(self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text` (str, or bytes taken as UTF-8).

        add_special: add BOS/EOS where the model asks for them.
        parse_special: let text like "<start_of_turn>" become its control token
        (use for rendered chat templates, never for untrusted user text alone).
        """
        _ = self._model.handle()
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        capacity = len(data) + 2 * int(add_special) + 1
        while True:
            buf = (_llama.llama_token * capacity)()
            n = _llama.llama_tokenize(self._ptr, data, len(data), buf, capacity, add_special, parse_special)
            if n == _INT32_MIN:
                raise TokenizeError(f"text of {len(data)} bytes gives more tokens than int32 can count")
            if n >= 0:
                return buf[:n]
            capacity = -n

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes one token contributes to text. May be part of a UTF-8 character.

        special=False renders control tokens as nothing, as in generated text.
        Cached per token: the detokenizer calls this once per generated token.
        """
        _ = self._model.handle()
        key = token if not special else ~token
        piece = self._pieces.get(key)
        if piece is None:
            self._check_token(token)
            piece = self._token_to_piece(token, special)
            self._pieces[key] = piece
        return piece

    def detokenize(self, tokens: Sequence[int] | np.ndarray, *, remove_special: bool = False,
                   unparse_special: bool = False) -> str:
        """Text of a whole token sequence (invalid UTF-8 is replaced, never raised)."""
        _ = self._model.handle()
        ids = np.ascontiguousarray(tokens, dtype=np.int32)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
            raise TokenizeError(f"token ids must lie in [0, {self.n_vocab}); got {ids.min()}..{ids.max()}")
        ptr = ids.ctypes.data_as(ctypes.POINTER(_llama.llama_token))
        capacity = max(16, 8 * ids.size)
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n = _llama.llama_detokenize(self._ptr, ptr, ids.size, buf, capacity, remove_special, unparse_special)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            capacity = -n

    @functools.cached_property
    def eog_tokens(self) -> tuple[int, ...]:
        """Every end-of-generation token id (Gemma 3: 1, 106, 212), found once: 0.2 s over 262k tokens."""
        _ = self._model.handle()
        return tuple(t for t in range(self.n_vocab) if _llama.llama_vocab_is_eog(self._ptr, t))

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The most bytes of text any one token stands for, special tokens included.

        A text of B bytes has at least ceil(B / max_token_bytes) tokens: a
        bound on a prompt's length that is known before tokenizing it.
        """
        _ = self._model.handle()
        return max(len(self._token_to_piece(token, True)) for token in range(self.n_vocab))

    # --- helpers -----------------------------------------------------------

    def _token_to_piece(self, token: int, special: bool) -> bytes:
        capacity = 32
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n = _llama.llama_token_to_piece(self._ptr, token, buf, capacity, 0, special)
            if n >= 0:
                return buf.raw[:n]
            capacity = -n

    def _check_token(self, token: int) -> None:
        if not 0 <= token < self.n_vocab:
            raise TokenizeError(f"token id {token} is outside the vocabulary [0, {self.n_vocab})")
