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
from helios_core.generate import Generation, GenerationParams, Generator, Step
from helios_core.model import Model
from helios_core.resolve import default_model_path, resolve_model
from helios_core.sampling import LogitsProcessor, Sampler, SamplingState, make_sampler

__all__ = [
    "Batch",
    "ChatTemplateError",
    "Context",
    "ContextError",
    "ContextFullError",
    "DecodeError",
    "Generation",
    "GenerationParams",
    "Generator",
    "HeliosError",
    "LogitsProcessor",
    "Model",
    "ModelLoadError",
    "ModelNotFoundError",
    "PerfCounters",
    "Sampler",
    "SamplingState",
    "Step",
    "TokenizeError",
    "default_model_path",
    "make_sampler",
    "resolve_model",
]
