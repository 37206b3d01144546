"""Sampling where the logits are: llama.cpp's backend sampling, for the built-in chains where it is exact.

A llama sampler chain set on a sequence (`llama_set_sampler`) runs inside the
compute graph: on the GPU where there is one, on the CPU threads otherwise.
The decode then leaves that sequence's token beside its output row, and the
token loop reads one int instead of 262,144 floats; when every output of a
step is sampled this way llama.cpp does not even copy the logits out.

Which chains take this path (`chain_for`), and why only these:

- greedy (temperature 0, top_k 1): an argmax, the same token as
  sampling.greedy (the lowest id on a tie). The scheduler puts it in the graph
  only where the logits are on a GPU unless told to (backend_sampling=True): on
  CPU threads ggml's argmax over the vocabulary costs ~1 ms a token more than
  NumPy's, far more than the Python it saves;
- top-k with 1 < k <= MAX_TOP_K, then temperature, top-p, min-p, a draw: the k
  best cut first and exactly, so the in-graph softmax and cumulative sum work
  on k floats and draw from the same distribution as the Python chain.

Everything else stays on the Python path, which is exact for it: a chain
without top-k (a full-vocabulary draw or a nucleus over it: llama.cpp's graph
would take the float32 cumulative sum over 262,144 tokens, which rounds the
smallest ones away and hands their mass to the last token), typical, top-n-sigma,
XTC, mirostat, any processor (penalties, bias, DRY, bans, a constraint), a
custom or batched sampler, logprobs, prompt logprobs, and speculative decoding
(which needs every row of a draft). Those see the full row as a zero-copy view,
as before.

Seeds: the draw uses llama.cpp's own generator (std::mt19937, seeded with the
request's seed mod 2**32 - 1), so a seeded request is reproducible on this path,
but its tokens differ from the Python path's for the same seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from helios_core import _llama
from helios_core.errors import HeliosError
from helios_core.sampling.chain import greedy

# Top-k above this stays on the Python path: the in-graph top-k pass grows with k, and the
# chains people use for speed cut to tens of tokens.
MAX_TOP_K = 1024


def enabled_by_default() -> bool:
    """Whether schedulers sample on the backend unless told: yes, but for HELIOS_BACKEND_SAMPLING=0.

    The switch lets the whole suite run on the Python path alone (every sampler test on both paths).
    """
    return os.environ.get("HELIOS_BACKEND_SAMPLING", "1") != "0"


@dataclass(frozen=True)
class BackendChain:
    """A built-in chain that runs in the compute graph. temperature 0: greedy."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def describe(self) -> str:
        if self.is_greedy:
            return "greedy"
        parts = [f"top_k={self.top_k}", f"temperature={self.temperature}"]
        parts += [f"top_p={self.top_p}"] if self.top_p < 1.0 else []
        parts += [f"min_p={self.min_p}"] if self.min_p > 0.0 else []
        return "top-k(" + ", ".join(parts) + ")"


def chain_for(params, sampler, processors) -> BackendChain | None:
    """The backend chain for a request, or None where only the Python path is exact.

    params: its GenerationParams; sampler and processors: what its SequenceState built from them.
    """
    if params.sampler is not None and params.sampler is not greedy:
        return None
    if params.sampler_factory is not None or params.batch_sampler is not None or params.constraint is not None:
        return None
    if processors or params.logprobs or params.prompt_logprobs is not None:
        return None
    if sampler is greedy:
        return BackendChain()
    if params.sampler is not None or params.mirostat or params.typical_p < 1.0 or params.top_n_sigma > 0.0:
        return None
    if params.xtc_probability > 0.0 and params.xtc_threshold <= 0.5:
        return None
    if not 1 < params.top_k <= MAX_TOP_K:
        return None
    return BackendChain(params.temperature, params.top_k, params.top_p, params.min_p, params.seed)


class BackendSampler:
    """A BackendChain built as a llama sampler chain and set on one sequence of a context.

    `token(row)` reads what the last decode drew for batch row `row`. close() takes the
    chain off the sequence and frees it; call it before the sequence serves another request.
    """

    def __init__(self, ctx, seq_id: int, chain: BackendChain):
        self.chain = chain
        self._ctx = ctx
        self._seq_id = seq_id
        self._ptr = _build(chain)
        if not _llama.llama_set_sampler(ctx.ptr, seq_id, self._ptr):
            _llama.llama_sampler_free(self._ptr)
            self._ptr = None
            raise BackendSamplingError(f"llama.cpp cannot run {chain.describe()} in the compute graph")

    def token(self, row: int) -> int:
        token = _llama.llama_get_sampled_token_ith(self._ctx.ptr, row)
        if token < 0:
            raise BackendSamplingError(f"the last decode sampled no token for batch row {row}")
        return token

    def close(self) -> None:
        """Safe to call twice, and after the context closed."""
        ptr, self._ptr = self._ptr, None
        if ptr is None:
            return
        if not self._ctx.closed:
            _llama.llama_set_sampler(self._ctx.ptr, self._seq_id, None)
        _llama.llama_sampler_free(ptr)


class BackendSamplingError(HeliosError):
    """llama.cpp refused a backend chain, or a decode left no token for it."""


def _build(chain: BackendChain) -> int:
    ptr = _llama.llama_sampler_chain_init(_llama.llama_sampler_chain_default_params())
    if chain.is_greedy:
        parts = [_llama.llama_sampler_init_greedy()]
    else:
        # Top-k first: it does not depend on the temperature, and every later stage then works on k floats.
        parts = [_llama.llama_sampler_init_top_k(chain.top_k), _llama.llama_sampler_init_temp(chain.temperature)]
        if chain.top_p < 1.0:
            parts.append(_llama.llama_sampler_init_top_p(chain.top_p, 1))
        if chain.min_p > 0.0:
            parts.append(_llama.llama_sampler_init_min_p(chain.min_p, 1))
        # LLAMA_DEFAULT_SEED asks llama.cpp for a random seed: a request's seed never maps onto it.
        seed = _llama.LLAMA_DEFAULT_SEED if chain.seed is None else chain.seed % _llama.LLAMA_DEFAULT_SEED
        parts.append(_llama.llama_sampler_init_dist(seed))
    for part in parts:
        _llama.llama_sampler_chain_add(ptr, part)  # the chain owns its parts
    return ptr
