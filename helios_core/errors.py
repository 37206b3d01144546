"""Errors raised by helios_core: every C failure becomes one of these."""

from __future__ import annotations


class HeliosError(Exception):
    """Base class of every error helios_core raises on purpose."""


class LibraryNotFoundError(HeliosError, ImportError):
    """libllama is not built (or not where HELIOS_LIB_DIR points)."""


class ClosedError(HeliosError):
    """An object was used after close(), or after the model it belongs to was closed."""


class ModelLoadError(HeliosError):
    """A model file is missing, unreadable, not GGUF, or llama.cpp refused it."""


class ModelNotFoundError(ModelLoadError):
    """A model spec names a file that is neither on disk nor in the hub cache."""


class ContextError(HeliosError):
    """llama.cpp could not create a context with the requested parameters."""


class DecodeError(HeliosError):
    """llama_decode failed; `code` is its return value."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class ContextFullError(DecodeError):
    """No room in the KV cache for the batch (llama_decode returned 1), or a position past n_ctx."""


class TokenizeError(HeliosError):
    """Text could not be tokenized (for instance, it overflows int32 token counts)."""


class ChatTemplateError(HeliosError):
    """A chat template is unknown to llama.cpp or could not be applied to these messages."""


class ConstraintError(HeliosError, ValueError):
    """A schema, regular expression or grammar llguidance rejects, or a constraint generation can no longer meet.

    The message is llguidance's own (without its parser-state dump), so a server can quote it in a 400.
    """


class BackendError(HeliosError):
    """A backend failed for good (an RPC worker unreachable or gone, a device lost): the process cannot go on."""
