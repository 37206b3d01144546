"""Embeddings: one L2-normalised vector per text, pooled from the model's last hidden states.

An Embedder owns a llama context of its own on a loaded Model, made with
embeddings on: generation's context is untouched, and llama.cpp lets two
contexts of one model decode on two threads at once. Many inputs share a
decode as separate sequences; the context's memory is cleared before each.

Each input is decoded whole in one compute pass (n_ubatch = n_batch): llama.cpp
pools a sequence over the pass it sits in, so an input split across two
passes would be pooled over part of its tokens only, and a model with
non-causal attention (embedding models such as EmbeddingGemma) needs the whole
decode in one pass. n_batch is therefore also the longest input, in tokens, as
llama-server's n_ubatch is for its --embeddings.

EmbeddingWorker (embedding_worker.py) runs an Embedder on a thread of its own for a server.

Cost: llama.cpp outputs every token of an embeddings decode, so it computes
(and buffers) a logits row per token as well: about 2 MiB of memory per token
of n_batch on Gemma's 262,144-token vocabulary, and most of the time of a
decode on a small model. llama-server pays the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from helios_core import _llama
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.errors import HeliosError
from helios_core.model import Model

Input = str | Sequence[int]  # a text (tokenized with the model's BOS) or token ids, taken as given

POOLING = {
    "mean": _llama.LLAMA_POOLING_TYPE_MEAN,
    "cls": _llama.LLAMA_POOLING_TYPE_CLS,
    "last": _llama.LLAMA_POOLING_TYPE_LAST,
}
DEFAULT_BATCH = 512  # tokens per decode, and so the longest input: llama-server's default n_ubatch
DEFAULT_SEQUENCES = 64  # inputs per decode at most
MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ


class InputTooLongError(HeliosError, ValueError):
    """An input has more tokens than one embedding decode holds (n_batch)."""


def model_pooling(model: Model) -> str:
    """The pooling a model's GGUF asks for (`<arch>.pooling_type`) when it is mean, cls or last; else "mean".

    Generative models (Gemma 3 among them) name none; a reranker's "rank" is no embedding.
    """
    value = model.meta(f"{model.architecture}.pooling_type")
    names = {number: name for name, number in POOLING.items()}
    try:
        return names.get(int(value), "mean") if value is not None else "mean"
    except ValueError:
        return "mean"


def checked_pooling(model: Model, pooling: str | None) -> str:
    """`pooling` if it is one of POOLING's names, model_pooling(model) for None; else a ValueError."""
    if pooling is None:
        return model_pooling(model)
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {pooling!r}")
    return pooling


def embedding_size(model: Model) -> int:
    """Floats per embedding: the model's output width (n_embd, or a projection's width after it)."""
    return int(_llama.llama_model_n_embd_out(model.ptr))


def input_tokens(model: Model, item: Input, index: int, max_tokens: int) -> np.ndarray:
    """One input's tokens (int32), checked: not empty, ids in the vocabulary, at most max_tokens tokens.

    Raises ValueError (InputTooLongError for length) naming the input by its index. A text is refused
    before it is tokenized when its bytes alone prove it too long (no token
    spans more than the vocabulary's longest piece), so megabytes cost no time.
    """
    vocab = model.vocab
    if isinstance(item, str):
        if not item:
            raise ValueError(f"input[{index}] is an empty text")  # BOS alone says nothing about a text
        n_bytes = len(item.encode())
        if n_bytes > max_tokens and -(-n_bytes // vocab.max_token_bytes) > max_tokens:
            raise InputTooLongError(
                f"input[{index}] has at least {-(-n_bytes // vocab.max_token_bytes)} tokens "
                f"({n_bytes} bytes); at most {max_tokens} fit one embedding decode"
            )
        tokens = np.asarray(vocab.tokenize(item, add_special=True, parse_special=True), dtype=np.int32)
    else:
        try:
            tokens = np.asarray(item, dtype=np.int64).reshape(-1)
        except OverflowError:  # an id past int64 (JSON allows up to 2**64 - 1)
            tokens = np.array([-1], dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab.n_vocab):
            raise ValueError(f"input[{index}]: token ids must lie in [0, {vocab.n_vocab})")
        tokens = tokens.astype(np.int32)
    if tokens.size == 0:
        raise ValueError(f"input[{index}] is empty")
    if tokens.size > max_tokens:
        raise InputTooLongError(
            f"input[{index}] has {tokens.size} tokens; at most {max_tokens} fit one embedding decode"
        )
    return tokens


class Embedder:
    """An embeddings context over a Model. Close it (or use `with`); closing the model closes it too.

    pooling: "mean", "cls" or "last" (default: model_pooling(model)). On a causal
        model "cls" is the first token's state, the same for every text that
        starts with BOS; "mean" or "last" are the useful ones there.
    n_batch: tokens per decode, which is also the longest input (see the module's doc).
    n_seq_max: inputs per decode at most (no more than n_batch, nor llama.cpp's 256).
    n_threads: CPU threads (default: every core).

    Memory: the KV cache for n_batch tokens, and llama.cpp's logits buffer of
    1 MiB per token of the largest decode on Gemma's vocabulary plus a compute
    buffer of the same order: 1.1 GiB at n_batch=512, measured.

    One thread at a time, as for any Context.
    """

    def __init__(
        self,
        model: Model,
        *,
        pooling: str | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_seq_max: int = DEFAULT_SEQUENCES,
        n_threads: int | None = None,
    ):
        pooling = checked_pooling(model, pooling)
        self.pooling = pooling
        self.model = model
        # llama.cpp aborts when a context's sequences outnumber its output rows (n_batch).
        n_seq_max = min(n_seq_max, n_batch, MAX_SEQUENCES)
        self.ctx = Context(
            model,
            n_ctx=n_batch,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_seq_max=n_seq_max,
            n_threads=n_threads,
            swa_full=False,
            kv_unified=True,  # inputs of any length up to n_batch share one decode; no KV is kept
            embeddings=True,
            pooling=POOLING[pooling],
        )
        self.n_batch = self.ctx.n_batch  # llama.cpp may round n_ctx up, never n_batch
        self.n_seq_max = self.ctx.n_seq_max
        self.n_embd = embedding_size(model)
        self._batch = Batch(self.n_batch)

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokens(self, item: Input, index: int = 0) -> np.ndarray:
        """One input's tokens, checked by input_tokens() against this context's n_batch."""
        return input_tokens(self.model, item, index, self.n_batch)

    def embed(self, inputs: Input | Sequence[Input]) -> np.ndarray:
        """Embeddings of `inputs` (a text, or a list of texts and token-id lists): float32 (n, n_embd), unit rows.

        Rows follow the order of the inputs. Every input is checked (tokens())
        before anything is decoded.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        token_lists = [self.tokens(item, i) for i, item in enumerate(inputs)]
        out = np.empty((len(token_lists), self.n_embd), dtype=np.float32)
        for group in self.groups([t.size for t in token_lists]):
            out[group] = self.decode([token_lists[i] for i in range(group.start, group.stop)])
        return out

    def groups(self, lengths: Sequence[int]) -> Iterator[slice]:
        """Consecutive runs of inputs (by token count) that fit one decode of this context."""
        return groups(lengths, self.n_batch, self.n_seq_max)

    def decode(self, token_lists: Sequence[np.ndarray]) -> np.ndarray:
        """One decode of inputs that fit together (see groups()): their unit embeddings, float32 (n, n_embd)."""
        batch = self._batch
        batch.clear()
        for seq_id, tokens in enumerate(token_lists):
            batch.add(tokens, 0, seq_id)
        # llama.cpp outputs every token of an embeddings decode; flag them so, as it expects.
        batch.logits[: batch.n_tokens] = 1
        self.ctx.memory_clear()
        self.ctx.decode(batch)
        vectors = np.stack([self.ctx.sequence_embedding(s) for s in range(len(token_lists))])
        return normalize(vectors)


def groups(lengths: Sequence[int], n_batch: int, n_seq_max: int) -> Iterator[slice]:
    """Consecutive runs of inputs (by token count) of at most n_batch tokens and n_seq_max inputs each."""
    start, used = 0, 0
    for i, n in enumerate(lengths):
        if i > start and (used + n > n_batch or i - start == n_seq_max):
            yield slice(start, i)
            start, used = i, 0
        used += n
    if start < len(lengths):
        yield slice(start, len(lengths))


def embed(
    model: Model,
    inputs: Input | Sequence[Input],
    pooling: str | None = None,
    *,
    n_batch: int = DEFAULT_BATCH,
    n_seq_max: int = DEFAULT_SEQUENCES,
    n_threads: int | None = None,
) -> np.ndarray:
    """Embeddings of texts or token-id lists: float32 (n, n_embd), each row of unit L2 norm.

    Texts are tokenized with the model's BOS (and EOS where its GGUF adds
    one), special-token text parsed, as llama-server does; token lists are
    taken as given. Inputs are batched n_seq_max (and at most n_batch tokens)
    to a decode. An input longer than n_batch tokens is a ValueError naming
    it. Makes a context for the call and frees it after: keep an Embedder to
    embed many times.
    """
    with Embedder(model, pooling=pooling, n_batch=n_batch, n_seq_max=n_seq_max, n_threads=n_threads) as embedder:
        return embedder.embed(inputs)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (in float32; an all-zero row stays zero), as llama-server's embd_normalize=2."""
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
