"""Model: owner of a loaded llama_model, its vocabulary and its GGUF metadata."""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

from helios_core import _llama, backend
from helios_core.errors import ClosedError, ModelLoadError
from helios_core.handle import Handle
from helios_core.vocab import Vocab

GGUF_MAGIC = b"GGUF"
# magic (4) + version (4) + tensor count (8) + metadata count (8)
_GGUF_HEADER_BYTES = 24


class Model:
    """A GGUF model loaded by llama.cpp. Close it (or use `with`) to free it.

    n_gpu_layers: layers to offload to a GPU build or to RPC workers (rpc.add_workers) (-1 = all, 0 = CPU only).
    tensor_split: the share of the offloaded layers each device takes, in ggml's device
        order (backend.devices(), the CPU left out), as llama.cpp's --tensor-split; None
        splits by free memory.
    use_mmap: map the file instead of reading it (shares pages between processes).
    vocab_only: load only the tokenizer (fast; no weights, no contexts).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_gpu_layers: int = 0,
        tensor_split: Sequence[float] | None = None,
        use_mmap: bool = True,
        vocab_only: bool = False,
    ):
        self.path = Path(path)
        check_gguf_file(self.path)
        backend.ensure_initialized()

        params = _llama.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.load_mode = _llama.LLAMA_LOAD_MODE_MMAP if use_mmap else _llama.LLAMA_LOAD_MODE_NONE
        params.vocab_only = vocab_only
        if tensor_split:
            if len(tensor_split) > _llama.llama_max_devices() or any(not share >= 0 for share in tensor_split):
                raise ValueError(f"tensor_split takes at most {_llama.llama_max_devices()} shares, each >= 0")
            # Kept on self: llama.cpp reads the array during the load.
            self._tensor_split = (ctypes.c_float * _llama.llama_max_devices())(*tensor_split)
            params.tensor_split = self._tensor_split
        with backend.errors_captured() as errors:
            ptr = _llama.llama_model_load_from_file(os.fsencode(self.path), params)
        if not ptr:
            # llama.cpp's first error line names the cause; the rest say "failed to load".
            reason = errors[0] if errors else "no reason given; see the `helios.llama` logger"
            raise ModelLoadError(f"llama.cpp could not load {self.path}: {reason}")
        self._handle: Handle | None = Handle(ptr, _llama.llama_model_free)
        # Contexts made from this model: close() closes them first.
        self._dependents: weakref.WeakSet = weakref.WeakSet()
        self.vocab_only = vocab_only
        self.vocab = Vocab(self)
        # Whether the output layer (the logits) is computed on a GPU: where a backend sampler pays for greedy.
        self.gpu_output = bool(
            not vocab_only
            and _llama.llama_supports_gpu_offload()
            and (n_gpu_layers < 0 or n_gpu_layers > _llama.llama_model_n_layer(ptr))
        )

    # --- lifetime ----------------------------------------------------------

    def handle(self) -> Handle:
        """The model's live handle; raises ClosedError once closed.

        Hold the returned object (a local variable will do) across a C call
        that another thread might race with close(): the model is not freed
        while it is referenced.
        """
        handle = self._handle
        if handle is None:
            raise ClosedError(f"model {self.path.name} is closed")
        return handle

    @property
    def ptr(self) -> int:
        return self.handle().ptr

    def close(self) -> None:
        """Close every context made from this model, then the model. Safe to call twice.

        Later use of the model, its vocab or its contexts raises ClosedError.
        The memory is freed once no call in flight (on any thread) and no
        logits view still needs it.
        """
        for dependent in list(self._dependents):
            dependent.close()
        self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def adopt(self, dependent) -> None:
        """Register something made from this model (it has close()) to be closed with it."""
        self._dependents.add(dependent)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.description
        return f"Model({str(self.path)!r}, {state})"

    # --- metadata ----------------------------------------------------------

    @property
    def description(self) -> str:
        """llama.cpp's one-line summary, e.g. 'gemma3 270M Q4_K - Medium'."""
        return _read_string(lambda buf, n: _llama.llama_model_desc(self.ptr, buf, n))

    @property
    def architecture(self) -> str:
        return self.meta("general.architecture") or ""

    @property
    def n_params(self) -> int:
        return int(_llama.llama_model_n_params(self.ptr))

    @property
    def size(self) -> int:
        """Bytes of all tensors."""
        return int(_llama.llama_model_size(self.ptr))

    @property
    def n_ctx_train(self) -> int:
        """Context length the model was trained with, in tokens."""
        return int(_llama.llama_model_n_ctx_train(self.ptr))

    @property
    def n_embd(self) -> int:
        return int(_llama.llama_model_n_embd(self.ptr))

    @property
    def n_embd_inp(self) -> int:
        """Width of an input embedding row: n_embd, or more where media rows carry more layers' inputs (Qwen3-VL)."""
        return int(_llama.llama_model_n_embd_inp(self.ptr))

    @property
    def n_layer(self) -> int:
        return int(_llama.llama_model_n_layer(self.ptr))

    @property
    def n_swa(self) -> int:
        """Sliding-window size in tokens, 0 when the model has no sliding-window layers."""
        return int(_llama.llama_model_n_swa(self.ptr))

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value by key, as text; None when absent (arrays are not supported)."""
        raw = key.encode()
        text = _read_string(lambda buf, n: _llama.llama_model_meta_val_str(self.ptr, raw, buf, n))
        return None if text is None else text

    def meta_keys(self) -> list[str]:
        count = _llama.llama_model_meta_count(self.ptr)
        return [
            _read_string(lambda buf, n, i=i: _llama.llama_model_meta_key_by_index(self.ptr, i, buf, n))
            for i in range(count)
        ]

    def chat_template(self, name: str | None = None) -> str | None:
        """The chat template stored in the GGUF (`tokenizer.chat_template[.name]`), or None."""
        raw = _llama.llama_model_chat_template(self.ptr, name.encode() if name else None)
        return raw.decode("utf-8") if raw else None


def _read_string(call, size: int = 256) -> str | None:
    """Run a llama.cpp `(buf, size) -> length or -1` getter, growing the buffer when needed."""
    while True:
        buf = ctypes.create_string_buffer(size)
        n = call(buf, size)
        if n < 0:
            return None
        if n < size:
            return buf.value.decode("utf-8", errors="replace")
        size = n + 1


def check_gguf_file(path: Path) -> None:
    """Clear errors for the common mistakes, before llama.cpp sees the file."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"model path is a directory, not a .gguf file: {path}")
    try:
        with path.open("rb") as f:
            header = f.read(_GGUF_HEADER_BYTES)
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror}") from None
    if header[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {header[:4]!r}, not {GGUF_MAGIC!r})")
    if len(header) < _GGUF_HEADER_BYTES:
        raise ModelLoadError(f"{path} is truncated: {len(header)} bytes, shorter than a GGUF header")
