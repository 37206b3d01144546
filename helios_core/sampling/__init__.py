"""Samplers and logits processors: the plug-in points of the token loop.

The contract:

    Sampler         = Callable[[logits, SamplingState], int]
    LogitsProcessor = Callable[[logits, SamplingState], logits]
    SamplerFactory  = Callable[[], Sampler]    (called once per request)

`logits` is the float32 NumPy array of shape (n_vocab,) for the sequence's
next token. The loop hands processors and samplers llama.cpp's own buffer
(a read-only view, valid until the next decode): a processor returns a
modified *copy*, never writes in place. Processors run in order, then the
sampler picks one token id. `state` carries the sequence's token history
(prompt and generated, int32), its own `numpy.random.Generator`, and the
step number (0 for the first generated token). A sampler that keeps state
from token to token (mirostat) belongs to one request: give the engine a
factory, and it makes one per request.

Gemma's vocabulary has 262,144 entries, where a full softmax costs more than
a model step. So a sampler starts from `candidates(logits, temperature)`: the
tokens that can carry probability at float precision, with their weights.
Pure filters narrow that set (`apply_top_k`, `apply_top_p`, `apply_min_p`,
`apply_typical`, `apply_top_n_sigma`, `apply_xtc`, `apply_temperature`) and
`draw` picks from it; `make_sampler` chains the built-in ones.

Processors in other conventions adapt: `from_numpy_processor` for the
`(input_ids, scores)` NumPy convention of llama-cpp-python, and
`from_transformers` for transformers' processors, which need torch tensors
of shape (batch, ...) (torch is then needed; helios does not depend on it).

Modules: contract (the types), cut (candidates, softmax, draw), filters,
chain (make_sampler, greedy), mirostat, dry, processors (penalties, bias), token_logprobs, adapters.
"""

from helios_core.sampling.adapters import from_numpy_processor, from_transformers
from helios_core.sampling.chain import DEFAULT_TEMPERATURE, greedy, make_sampler
from helios_core.sampling.contract import BatchSampler, LogitsProcessor, Sampler, SamplerFactory, SamplingState
from helios_core.sampling.cut import (
    CUTOFF,
    MIN_TEMPERATURE,
    Candidates,
    _candidates,  # noqa: F401 (kernels that tests/test_sampling.py checks directly)
    _draw,  # noqa: F401
    candidates,
    draw,
    softmax,
)
from helios_core.sampling.dry import DRY_SEQUENCE_BREAKERS, dry_sequence_breakers, make_dry_penalty
from helios_core.sampling.filters import (
    _nucleus,  # noqa: F401
    apply_min_p,
    apply_temperature,
    apply_top_k,
    apply_top_n_sigma,
    apply_top_p,
    apply_typical,
    apply_xtc,
)
from helios_core.sampling.mirostat import MirostatV2, make_mirostat_v2
from helios_core.sampling.processors import (
    apply_processors,
    make_logit_bias,
    make_logits_processors,
    make_presence_frequency_penalty,
    make_repetition_penalty,
    make_token_ban,
)
from helios_core.sampling.token_logprobs import TokenLogprob, logprobs

__all__ = [
    "BatchSampler",
    "CUTOFF",
    "DEFAULT_TEMPERATURE",
    "DRY_SEQUENCE_BREAKERS",
    "MIN_TEMPERATURE",
    "Candidates",
    "LogitsProcessor",
    "MirostatV2",
    "Sampler",
    "SamplerFactory",
    "SamplingState",
    "TokenLogprob",
    "apply_min_p",
    "apply_processors",
    "apply_temperature",
    "apply_top_k",
    "apply_top_n_sigma",
    "apply_top_p",
    "apply_typical",
    "apply_xtc",
    "candidates",
    "draw",
    "dry_sequence_breakers",
    "from_numpy_processor",
    "from_transformers",
    "greedy",
    "logprobs",
    "make_dry_penalty",
    "make_logit_bias",
    "make_logits_processors",
    "make_mirostat_v2",
    "make_presence_frequency_penalty",
    "make_repetition_penalty",
    "make_token_ban",
    "make_sampler",
    "softmax",
]
