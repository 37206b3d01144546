"""LoRA adapters: low-rank fine-tunes of a loaded model, chosen per context and so per decode.

An `Adapter` is llama.cpp's llama_adapter_lora, loaded from a LoRA GGUF (as
llama.cpp's convert_lora_to_gguf.py writes them) for one model. llama.cpp sets
adapters on a whole context, not per sequence: every decode of a context
applies its current set, `W x + sum(scale * alpha / rank * B A x)` on each
weight an adapter covers.

    adapter = lora.Adapter(model, "tuned.gguf")
    lora.apply(ctx, [(adapter, 0.5)])        # every later decode of ctx
    lora.apply(ctx, ())                      # the base model again

A set of adapters with their scales is an AdapterSet, in canonical form
(adapter_set()): zero scales left out, in load order, so two requests asking
for the same thing compare equal and the scheduler batches them together.
KV states computed under one set are not valid under another: the caller
clears or re-reads them (the scheduler's prefix cache is keyed by the set).

Lifetime: an adapter belongs to its model. Closing the model closes its
adapters; the memory is freed once, after every context that applied the
adapter has let go of it (a context holds the handles of its current set),
and before the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from helios_core import _ggml, _llama, backend
from helios_core.context import Context
from helios_core.errors import ClosedError, ModelLoadError
from helios_core.handle import Handle
from helios_core.model import GGUF_MAGIC, Model, _read_string

# ((adapter, scale), ...): canonical when made by adapter_set().
AdapterSet = tuple[tuple["Adapter", float], ...]

_serial = itertools.count()


class Adapter:
    """A LoRA adapter loaded for `model`. Raises ModelLoadError (one line naming the file) if it does not fit.

    name: what the server calls it (`base:name` as a model name); the file's stem by default.
    """

    def __init__(self, model: Model, path: str | os.PathLike, *, name: str | None = None):
        self.path = Path(path)
        self.name = name or adapter_name(path)
        self.model = model
        self.serial = next(_serial)  # load order: the canonical order of a set
        check_file(self.path, model.architecture)
        model_handle = model.handle()
        with backend.errors_captured() as errors:
            ptr = _llama.llama_adapter_lora_init(model_handle.ptr, os.fsencode(self.path))
        if not ptr:
            raise ModelLoadError(f"LoRA adapter {self.path}: {_reason(errors)}")
        # Freed before its model: the handle keeps the model's alive until then.
        self._handle: Handle | None = Handle(ptr, _llama.llama_adapter_lora_free, model_handle)
        model.adopt(self)

    def handle(self) -> Handle:
        handle = self._handle
        if handle is None:
            raise ClosedError(f"LoRA adapter {self.name} is closed")
        return handle

    def close(self) -> None:
        """Refuse new use. Freed once no context applies it any more. Safe to call twice."""
        self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value of the adapter file as text (e.g. adapter.lora.alpha); None when absent."""
        ptr, raw = self.handle().ptr, key.encode()
        return _read_string(lambda buf, n: _llama.llama_adapter_meta_val_str(ptr, raw, buf, n))

    def meta_items(self) -> dict[str, str]:
        """Every scalar metadata value of the adapter file, by key (arrays are left out)."""
        ptr = self.handle().ptr
        items = {}
        for i in range(_llama.llama_adapter_meta_count(ptr)):
            key = _read_string(lambda buf, n, i=i: _llama.llama_adapter_meta_key_by_index(ptr, i, buf, n))
            items[key] = _read_string(lambda buf, n, i=i: _llama.llama_adapter_meta_val_str_by_index(ptr, i, buf, n))
        return items

    @property
    def alpha(self) -> float:
        return float(self.meta("adapter.lora.alpha") or 0.0)

    def __repr__(self) -> str:
        return f"Adapter({self.name!r}, {str(self.path)!r}{', closed' if self.closed else ''})"


def adapter_name(path: str | os.PathLike) -> str:
    """The name an adapter goes by unless given one: its file's stem ("tuned" for tuned.gguf)."""
    return Path(path).stem


def adapter_set(pairs: Iterable[tuple[Adapter, float]]) -> AdapterSet:
    """The canonical form of (adapter, scale) pairs: zero scales left out, in load order.

    Raises ValueError for an adapter given twice or a scale that is not a finite number.
    """
    chosen: dict[int, tuple[Adapter, float]] = {}
    for adapter, scale in pairs:
        scale = float(scale)
        if scale != scale or scale in (float("inf"), float("-inf")):
            raise ValueError(f"the scale of LoRA adapter {adapter.name} must be a finite number; got {scale}")
        if adapter.serial in chosen:
            raise ValueError(f"LoRA adapter {adapter.name} is given twice")
        chosen[adapter.serial] = (adapter, scale)
    return tuple(chosen[serial] for serial in sorted(chosen) if chosen[serial][1] != 0.0)


def apply(ctx: Context, adapters: Iterable[tuple[Adapter, float]] = ()) -> None:
    """Make `adapters` (pairs of adapter and scale) the set every later decode of `ctx` applies; () for none.

    Cheap when the set is the context's current one: nothing is done. Otherwise llama.cpp
    re-plans its compute graph at the next decode. The context holds the adapters' handles
    while they are set, so closing an adapter (or its model) never frees one under a decode.
    """
    wanted = adapters if type(adapters) is tuple and adapters == ctx.lora else adapter_set(adapters)
    if wanted == ctx.lora:
        return
    handle = ctx.handle()
    handles = []
    for adapter, _ in wanted:
        if adapter.model is not ctx.model:
            raise ValueError(f"LoRA adapter {adapter.name} was loaded for another model than this context's")
        handles.append(adapter.handle())
    n = len(wanted)
    pointers = (_llama.llama_adapter_lora_p * n)(*(h.ptr for h in handles))
    scales = (ctypes.c_float * n)(*(scale for _, scale in wanted))
    _llama.llama_set_adapters_lora(handle.ptr, pointers if n else None, n, scales if n else None)
    ctx.lora, ctx.lora_handles = wanted, tuple(handles)


def check_file(path: str | os.PathLike, architecture: str | None = None) -> None:
    """Raise ModelLoadError (one line naming the file) for a file that is no LoRA GGUF for `architecture`.

    Reads the file's header only, so a server can refuse a bad --lora before loading its model:
    a missing or unreadable file, another kind of GGUF, an adapter for another architecture
    (e.g. "llama" for a "gemma3" model), or a file cut short before the end of its tensors.
    What only the model can tell (a tensor the base model lacks) llama.cpp says at load.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"LoRA adapter {path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"LoRA adapter {path}: a directory, not a .gguf file")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelLoadError(f"LoRA adapter {path}: cannot read it ({e.strerror})") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"LoRA adapter {path}: not a GGUF file (it starts with {magic!r})")
    with _gguf(path) as gguf:
        if gguf is None:
            raise ModelLoadError(f"LoRA adapter {path}: not a readable GGUF file (truncated or damaged header)")
        kind, adapter_type = _meta_str(gguf, "general.type"), _meta_str(gguf, "adapter.type")
        if kind != "adapter" or adapter_type != "lora":
            raise ModelLoadError(
                f"LoRA adapter {path}: not a LoRA adapter (general.type={kind!r}, "
                f"adapter.type={adapter_type!r}; a model file?)"
            )
        arch = _meta_str(gguf, "general.architecture")
        if architecture is not None and arch != architecture:
            raise ModelLoadError(
                f"LoRA adapter {path}: made for architecture {arch!r}, not this model's {architecture!r}"
            )
        data = _ggml.gguf_get_data_offset(gguf)
        end = max(
            (
                data + _ggml.gguf_get_tensor_offset(gguf, i) + _ggml.gguf_get_tensor_size(gguf, i)
                for i in range(_ggml.gguf_get_n_tensors(gguf))
            ),
            default=data,
        )
    size = path.stat().st_size
    if size < end:
        raise ModelLoadError(f"LoRA adapter {path}: truncated ({size} bytes; its tensors end at byte {end})")


def gguf_architecture(path: str | os.PathLike) -> str | None:
    """general.architecture of a GGUF file (a model's, before it loads), from its header; None if unreadable."""
    with _gguf(Path(path)) as gguf:
        return None if gguf is None else _meta_str(gguf, "general.architecture")


@contextlib.contextmanager
def _gguf(path: Path) -> Iterator[int | None]:
    backend.ensure_initialized()
    gguf = _ggml.gguf_init_from_file(os.fsencode(path), _ggml.gguf_init_params(no_alloc=True, ctx=None))
    try:
        yield gguf or None
    finally:
        if gguf:
            _ggml.gguf_free(gguf)


def _meta_str(gguf: int, key: str) -> str | None:
    index = _ggml.gguf_find_key(gguf, key.encode())
    if index < 0 or _ggml.gguf_get_kv_type(gguf, index) != _ggml.GGUF_TYPE_STRING:
        return None  # gguf_get_val_str aborts the process on any other type
    return _ggml.gguf_get_val_str(gguf, index).decode(errors="replace")


def _reason(errors: list[str]) -> str:
    """llama.cpp's reason, from the error lines it logged ("...: failed to apply lora adapter: REASON")."""
    for line in errors:
        _, sep, reason = line.partition("failed to apply lora adapter: ")
        if sep:
            return reason.strip()
    return errors[0].strip() if errors else "llama.cpp refused it (see the `helios.llama` logger)"
