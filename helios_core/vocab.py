"""The tokenizer of a loaded model: text <-> token ids, pieces, special tokens.

All of llama.cpp's "buffer too small" protocols are handled here: a call
that returns a negative count is retried once with a buffer of that size.
llama.cpp documents tokenization as thread-safe, so the HTTP layer may
tokenize on its own threads while the engine thread decodes.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from helios_core import _llama
from helios_core.errors import TokenizeError

if TYPE_CHECKING:
    from helios_core.model import Model

_INT32_MIN = -(2**31)


class TokenPieces:
    """Every token's bytes, read once for a vocabulary: one buffer and where each token's part starts.

    special(t) is token_to_piece(t, special=True); plain(t) is token_to_piece(t)
    (special=False), which differs only for `control` tokens: they print
    nothing as text, and their special text is what a grammar may name.
    """

    def __init__(self, data: bytes, offsets: np.ndarray, control: np.ndarray):
        self.data = data
        self.offsets = offsets  # int64, n_vocab + 1: token t's bytes are data[offsets[t]:offsets[t + 1]]
        self.control = control  # bool per token: the plain piece is empty, the special text is not

    def special(self, token: int) -> bytes:
        return self.data[self.offsets[token] : self.offsets[token + 1]]

    def plain(self, token: int) -> bytes:
        return b"" if self.control[token] else self.special(token)

    def special_list(self) -> list[bytes]:
        """special(t) for every token, in order."""
        data, ends = self.data, self.offsets.tolist()
        return [data[start:end] for start, end in zip(ends[:-1], ends[1:], strict=True)]

    @property
    def lengths(self) -> np.ndarray:
        """Bytes of each token's special piece."""
        return np.diff(self.offsets)


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
        self._all_pieces: TokenPieces | None = None
        self._all_pieces_lock = threading.Lock()
        # The text of each token seen so far whose bytes are whole UTF-8 characters (filled by
        # text.IncrementalDetokenizer): the same from any decoder state that holds no split character.
        self.whole_texts: dict[int, str] = {}

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

    def detokenize(
        self, tokens: Sequence[int] | np.ndarray, *, remove_special: bool = False, unparse_special: bool = False
    ) -> str:
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

    def control_tokens(self, texts: Sequence[str]) -> dict[int, str]:
        """{token: text} for each of `texts` this vocabulary holds as one control token (it prints nothing).

        Generated text leaves such tokens out; parsers that read markers (tool calls, reasoning) need their text.
        """
        found = {}
        for text in texts:
            tokens = self.tokenize(text, add_special=False, parse_special=True)
            if len(tokens) == 1 and self.token_to_piece(tokens[0]) == b"":
                found[tokens[0]] = text
        return found

    @functools.cached_property
    def eog_tokens(self) -> tuple[int, ...]:
        """Every end-of-generation token id (Gemma 3: 1, 106, 212), found once: 0.03 s over 262k tokens."""
        _ = self._model.handle()
        n = self.n_vocab
        eog = np.fromiter(map(_llama.llama_vocab_is_eog, repeat(self._ptr, n), range(n)), dtype=bool, count=n)
        return tuple(np.flatnonzero(eog).tolist())

    @property
    def pieces(self) -> TokenPieces:
        """Every token's bytes, read on first use (0.1 s for Gemma's 262k tokens) and kept with the vocabulary.

        llguidance's tokenizer, DRY's sequence breakers and max_token_bytes are built from it.
        """
        pieces = self._all_pieces
        if pieces is None:
            with self._all_pieces_lock:  # one read, even when threads ask together
                if self._all_pieces is None:
                    _ = self._model.handle()
                    self._all_pieces = _read_pieces(self._ptr, self.n_vocab)
                pieces = self._all_pieces
        return pieces

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The most bytes of text any one token stands for, special tokens included.

        A text of B bytes has at least ceil(B / max_token_bytes) tokens: a
        bound on a prompt's length that is known before tokenizing it.
        """
        return int(self.pieces.lengths.max(initial=0))

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


# --- reading every piece at once ---------------------------------------------------

# Bytes of room per token in the first pass: nearly every piece fits, and the few longer
# ones are read again one by one with room for them.
_STRIDE = 32
# Tokens per C-level loop: between two, another thread may take the GIL.
_CHUNK = 4096


@functools.cache
def _piece_into():
    """llama_token_to_piece taking its buffer as an address, so a C-level map can fill rows of one array."""
    prototype = ctypes.CFUNCTYPE(
        ctypes.c_int32,
        ctypes.c_void_p,
        _llama.llama_token,
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_int32,
        ctypes.c_bool,
    )
    return prototype(ctypes.cast(_llama.llama_token_to_piece, ctypes.c_void_p).value)


def _read_pieces(vocab_ptr: int, n_vocab: int) -> TokenPieces:
    """Every token's piece, with no Python bytecode per token: C-level maps write each into its own row."""
    to_piece = _piece_into()
    grid = np.zeros((n_vocab, _STRIDE), dtype=np.uint8)
    base = grid.ctypes.data
    got = np.empty(n_vocab, dtype=np.int32)
    for start in range(0, n_vocab, _CHUNK):
        stop = min(start + _CHUNK, n_vocab)
        count = stop - start
        rows = range(base + start * _STRIDE, base + stop * _STRIDE, _STRIDE)
        calls = map(
            to_piece,
            repeat(vocab_ptr, count),
            range(start, stop),
            rows,
            repeat(_STRIDE, count),
            repeat(0, count),
            repeat(False, count),
        )
        got[start:stop] = np.fromiter(calls, dtype=np.int32, count=count)
    # One by one: pieces longer than a row (got < 0), and tokens that print nothing as text (got == 0),
    # whose special text is asked for.
    odd = np.flatnonzero(got <= 0).tolist()
    odd_pieces = [_read_piece(vocab_ptr, token, special=bool(got[token] == 0)) for token in odd]
    fitted = np.maximum(got, 0)
    lengths = fitted.astype(np.int64)
    lengths[odd] = [len(piece) for piece in odd_pieces]
    offsets = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # The rows' bytes in token order, with each odd token's piece put back where it belongs.
    packed = grid[np.arange(_STRIDE, dtype=np.int32) < fitted[:, None]].tobytes()
    packed_ends = np.cumsum(fitted, dtype=np.int64)
    parts, previous = [], 0
    for token, piece in zip(odd, odd_pieces, strict=True):
        end = int(packed_ends[token])
        parts += (packed[previous:end], piece)
        previous = end
    parts.append(packed[previous:])
    control = np.zeros(n_vocab, dtype=bool)
    control[odd] = [got[token] == 0 and len(piece) > 0 for token, piece in zip(odd, odd_pieces, strict=True)]
    return TokenPieces(b"".join(parts), offsets, control)


def _read_piece(vocab_ptr: int, token: int, special: bool) -> bytes:
    capacity = 256
    while True:
        buf = ctypes.create_string_buffer(capacity)
        n = _llama.llama_token_to_piece(vocab_ptr, token, buf, capacity, 0, special)
        if n >= 0:
            return buf.raw[:n]
        capacity = -n
