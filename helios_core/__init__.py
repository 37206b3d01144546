"""helios_core: llama.cpp through hand-written ctypes, and a token loop in Python/NumPy.

Layers, each importing only those below it:
    generate, sampling, text   the token loop, samplers, detokenizer, stop strings
    model, context, batch      owners of llama.cpp's C objects
    _llama                     ctypes declarations of llama.h
"""

from helios_core.batch import Batch
from helios_core.context import Context, PerfCounters
from helios_core.errors import (
    ChatTemplateError,
    ContextError,
    ContextFullError,
    DecodeError,
    HeliosError,
    ModelLoadError,
    ModelNotFoundError,
    TokenizeError,
)
from helios_core.model import Model
from helios_core.resolve import default_model_path, resolve_model

__all__ = [
    "Batch",
    "ChatTemplateError",
    "Context",
    "ContextError",
    "ContextFullError",
    "DecodeError",
    "HeliosError",
    "Model",
    "ModelLoadError",
    "ModelNotFoundError",
    "PerfCounters",
    "TokenizeError",
    "default_model_path",
    "resolve_model",
]
