"""helios_core: llama.cpp through hand-written ctypes, and a token loop in Python/NumPy.

Layers, each importing only those below it:
    engine, generate           the scheduler (many sequences, one decode per step), one-sequence generation
    scoring, embeddings        log-probabilities of given text, pooled embeddings of texts
    sampling, text             samplers, detokenizer, stop strings
    model, context, batch      owners of llama.cpp's C objects
    _llama                     ctypes declarations of llama.h
"""

from helios_core.batch import Batch
from helios_core.constraint import Constraint, grammar, json_object, json_schema, regex
from helios_core.context import Context, PerfCounters
from helios_core.embeddings import Embedder, EmbeddingWorker, embed
from helios_core.engine import Engine
from helios_core.errors import (
    ChatTemplateError,
    ConstraintError,
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
from helios_core.sampling import BatchSampler, LogitsProcessor, Sampler, SamplingState, make_sampler
from helios_core.scoring import Perplexity, Scored, perplexity, score

__all__ = [
    "Batch",
    "BatchSampler",
    "ChatTemplateError",
    "Constraint",
    "ConstraintError",
    "Context",
    "ContextError",
    "ContextFullError",
    "DecodeError",
    "Embedder",
    "EmbeddingWorker",
    "Engine",
    "Generation",
    "GenerationParams",
    "Generator",
    "HeliosError",
    "LogitsProcessor",
    "Model",
    "ModelLoadError",
    "ModelNotFoundError",
    "PerfCounters",
    "Perplexity",
    "Sampler",
    "SamplingState",
    "Scored",
    "Step",
    "TokenizeError",
    "default_model_path",
    "embed",
    "grammar",
    "json_object",
    "json_schema",
    "make_sampler",
    "perplexity",
    "regex",
    "resolve_model",
    "score",
]
