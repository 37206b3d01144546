"""helios_core: llama.cpp through hand-written ctypes, and a token loop in Python/NumPy.

Layers, each importing only those below it:
    engine/                    request, slots, scheduler (admission, plan: pure), commit (rows to tokens),
                               runner (the protocol they use), llama_runner (the only caller of decode,
                               batch, KV trims), worker (Engine: the thread)
    generate                   one-sequence generation (the N = 1 engine); runtime: owns what a served model opens
    speculative/               drafters, step cost, acceptance, verification
    prompt_cache, slot_files   the RAM tier behind the slots, and slot files on disk
    media_prompt, media_step   prompts with image and audio chunks, read in bounded steps
    scoring, embeddings        log-probabilities of given text, pooled embeddings of texts (embedding_worker:
                               the server's thread for them)
    worker                     Worker: a thread fed through an inbox (the engine's, the embedding worker's)
    chat/, tool_calls/         chat templates; tool-call formats (one module each), parser and grammars
    reasoning/                 reasoning sections: formats, parsers, the budget tracker
    constraint, guidance       JSON schema / regex / grammar constraints on llguidance
    sampling/                  samplers and processors; params (the one table of settings); backend (in-graph)
    sequence, text             one request's state; detokenizer and stop strings
    model, vocab, context, batch, kvcache, lora, control_vector, projector
                               owners of llama.cpp's (and libmtmd's) C objects
    backend, cpu_variant, rpc, resolve, handle, errors
                               devices and the proved CPU build, RPC workers, model files, lifetimes
    _llama, _llama_types, _ggml, _mtmd, _declarations
                               ctypes declarations, each function with a prototype checked by tests/test_abi*.py
                               and bound on first use (_declarations)
"""

from helios_core.batch import Batch
from helios_core.constraint import Constraint, grammar, json_object, json_schema, regex
from helios_core.context import Context, PerfCounters
from helios_core.embedding_worker import EmbeddingWorker
from helios_core.embeddings import Embedder, embed
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
