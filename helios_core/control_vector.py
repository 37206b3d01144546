"""Control vectors: steer a model by adding a direction to the output of some of its layers.

A control vector is an array of shape (n_layer, n_embd): row `il` is added to
the hidden state after layer `il`, scaled, for every token the context decodes
(llama.cpp's `llama_set_adapter_cvec`). llama.cpp never steers layer 0, so row 0
must be zero. It applies to a whole context, every sequence in it, until cleared.

    vector = control_vector.load("happy.gguf", model, scale=0.8)   # llama.cpp's format
    control_vector.apply(ctx, vector, layers=(10, 16))
    control_vector.apply(ctx, None)                                  # off again

Files are llama.cpp's control-vector GGUFs (as its cvector-generator writes
them): one F32 tensor `direction.<il>` of n_embd values per steered layer.
Several files, each with its own scale, add up, as `--control-vector` does
in llama.cpp.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

import numpy as np

from helios_core import _ggml, _llama
from helios_core.backend import ensure_initialized
from helios_core.context import Context
from helios_core.errors import ModelLoadError
from helios_core.model import Model


def zeros(model: Model) -> np.ndarray:
    """An all-zero vector for `model`: fill in rows 1.. and apply it."""
    return np.zeros((model.n_layer, model.n_embd), dtype=np.float32)


def load(path: str | os.PathLike, model: Model, scale: float = 1.0) -> np.ndarray:
    """A control-vector GGUF as an array of shape (model.n_layer, model.n_embd), times `scale`.

    Raises ModelLoadError (one line naming the file) for a file that is not such a
    GGUF, or whose directions do not fit this model.
    """
    ensure_initialized()
    name = os.fspath(path)
    params = _ggml.gguf_init_params(no_alloc=True, ctx=None)
    gguf = _ggml.gguf_init_from_file(os.fsencode(name), params)
    if not gguf:
        raise ModelLoadError(f"control vector {name}: not a readable GGUF file")
    vector = zeros(model)
    try:
        data_offset = _ggml.gguf_get_data_offset(gguf)
        for i in range(_ggml.gguf_get_n_tensors(gguf)):
            tensor = _ggml.gguf_get_tensor_name(gguf, i).decode(errors="replace")
            prefix, _, layer = tensor.partition(".")
            if prefix != "direction" or not layer.isdigit() or not 1 <= int(layer) < model.n_layer:
                raise ModelLoadError(
                    f"control vector {name}: tensor {tensor!r} is not direction.<layer> for a "
                    f"layer in 1..{model.n_layer - 1}"
                )
            if _ggml.gguf_get_tensor_type(gguf, i) != _ggml.GGML_TYPE_F32:
                raise ModelLoadError(f"control vector {name}: {tensor} is not F32")
            if _ggml.gguf_get_tensor_size(gguf, i) != 4 * model.n_embd:
                raise ModelLoadError(
                    f"control vector {name}: {tensor} does not hold n_embd = {model.n_embd} values "
                    "(a vector for another model?)"
                )
            offset = data_offset + _ggml.gguf_get_tensor_offset(gguf, i)
            direction = np.fromfile(name, dtype="<f4", count=model.n_embd, offset=offset)
            if direction.size != model.n_embd:
                raise ModelLoadError(f"control vector {name}: the file ends inside {tensor}")
            vector[int(layer)] += direction
    finally:
        _ggml.gguf_free(gguf)
    return vector * np.float32(scale)


def apply(
    ctx: Context, vector: np.ndarray | None, *, scale: float = 1.0, layers: tuple[int, int] | None = None
) -> None:
    """Steer every later decode of `ctx` by `scale * vector` on layers[0]..layers[1] (inclusive; default all).

    vector None turns steering off. The KV cache keeps what earlier decodes computed: clear
    it (ctx.memory_clear()) for prompts that must be read under the new vector.
    """
    model = ctx.model
    if vector is None:
        _set(ctx, None, 0, -1, -1)
        return
    steer = np.ascontiguousarray(vector, dtype=np.float32) * np.float32(scale)
    if steer.shape != (model.n_layer, model.n_embd):
        raise ValueError(
            f"a control vector for this model has shape ({model.n_layer}, {model.n_embd}); got {steer.shape}"
        )
    if np.any(steer[0]):
        raise ValueError("row 0 of a control vector must be zero: llama.cpp never steers layer 0")
    if not np.isfinite(steer).all():
        raise ValueError("a control vector must be finite")
    first, last = layers or (1, model.n_layer - 1)
    if not 1 <= first <= last < model.n_layer:
        raise ValueError(f"layers must satisfy 1 <= first <= last <= {model.n_layer - 1}; got {layers}")
    _set(ctx, steer[1:], model.n_embd, first, last)  # llama.cpp's buffer starts at layer 1


def _set(ctx: Context, rows: np.ndarray | None, n_embd: int, first: int, last: int) -> None:
    handle = ctx.handle()
    data = None if rows is None else rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    size = 0 if rows is None else rows.size
    if _llama.llama_set_adapter_cvec(handle.ptr, data, size, n_embd, first, last) != 0:
        raise ValueError("llama.cpp refused the control vector (see the helios.llama logger)")


def load_all(specs: Sequence[tuple[str, float]], model: Model) -> np.ndarray:
    """The sum of several files, each with its scale (llama.cpp's repeated --control-vector)."""
    total = zeros(model)
    for path, scale in specs:
        total += load(path, model, scale)
    return total
