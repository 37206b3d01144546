"""Saved sequence states on disk: one file per prefix, carrying what makes it valid.

A file is the magic, a format version, a JSON header, the tokens (int32,
little-endian) and llama.cpp's sequence state (llama_state_seq_get_data).
The header says what the state is valid for, and a file is loaded only when
every item matches the running server:

- model: the model file's size and a sha256 of samples of it (its first and
  last MiB and 64 KiB at 62 points between: the GGUF header, every tensor's
  neighbourhood), so a 20 GB model is not read whole at start-up;
- llama: the sha256 of the libllama that wrote it (a llama.cpp commit and its
  build options) and llama.cpp's LLAMA_STATE_SEQ_VERSION;
- context: n_ctx per sequence, swa_full, the KV cache types (defaults);
- control vectors: the paths, scales and layers the server applied;
- the adapter set: each adapter's path and scale (mapped back to the adapters
  loaded now; a file naming one not loaded is foreign);
- a sha256 of the tokens and the state, against corruption, and their sizes,
  against truncation.

Anything else raises SlotFileError with one line saying why; the caller logs
it and skips the file. Files are written to a temporary name and renamed, so
a crash never leaves half a file under a real name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from helios_core import _llama
from helios_core.engine import Scheduler
from helios_core.errors import HeliosError
from helios_core.kvcache import Span
from helios_core.prompt_cache import Entry, PromptCache

MAGIC = b"HELIOSKV"
VERSION = 1
# The llama.h this module was written against: a state of another format version is not ours to load.
LLAMA_STATE_SEQ_VERSION = 3
SUFFIX = ".slot"

_PREAMBLE = struct.Struct("<8sII")  # magic, format version, header bytes
_SAMPLE = 64 * 1024
_SAMPLES = 62


class SlotFileError(HeliosError):
    """A slot file that is not valid here (foreign, truncated, corrupt); the message says which."""


class SlotBusyError(HeliosError):
    """The slot is serving a request; its state can be saved or replaced once it is free."""


logger = logging.getLogger("helios.slot_files")


@dataclass(frozen=True)
class Validity:
    """What a saved state is valid for: the running server's model, llama.cpp build, context and steering."""

    model: str
    llama: str
    context: str
    control_vectors: str = ""


def validity(model_path: Path, *, n_ctx_seq: int, swa_full: bool = True, control_vectors: Sequence = ()) -> Validity:
    """The Validity of this process: hashes its model file and libllama (once each: seconds for a large model)."""
    library = Path(_llama.lib._name)
    return Validity(
        model=f"{model_path.stat().st_size}:{_sampled_sha256(model_path)}",
        llama=f"{_sha256(library.read_bytes())}:state-v{LLAMA_STATE_SEQ_VERSION}",
        context=f"n_ctx_seq={n_ctx_seq},swa_full={int(swa_full)},type_k=f16,type_v=f16",
        control_vectors=json.dumps(list(control_vectors)),
    )


def write(path: Path, entry: Entry, valid: Validity) -> int:
    """Write an entry to `path` (atomically); the bytes written."""
    tokens = np.ascontiguousarray(entry.tokens, dtype="<i4").tobytes()
    header = {
        **asdict(valid),
        "lora": [[str(adapter.path), scale] for adapter, scale in entry.lora],
        "n_tokens": int(entry.tokens.size),
        "state_bytes": len(entry.state),
        "sha256": _sha256(tokens, entry.state),
        "mrope_spans": [[span.start, span.n_tokens, span.n_pos] for span in entry.spans],
    }
    head = json.dumps(header).encode()
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as f:
        f.write(_PREAMBLE.pack(MAGIC, VERSION, len(head)))
        f.write(head)
        f.write(tokens)
        f.write(entry.state)
    os.replace(temporary, path)
    return _PREAMBLE.size + len(head) + len(tokens) + len(entry.state)


def read(path: Path, valid: Validity, adapters: Sequence = ()) -> Entry:
    """The entry saved in `path`, if it is valid here; raises SlotFileError saying why not.

    adapters: the LoRA adapters loaded now (lora.Adapter), which a file's adapter set must name.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SlotFileError(f"{path.name}: cannot be read ({error.strerror})") from None
    if len(data) < _PREAMBLE.size:
        raise SlotFileError(f"{path.name}: truncated (no header)")
    magic, version, head_bytes = _PREAMBLE.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise SlotFileError(f"{path.name}: not a helios slot file of format {VERSION}")
    try:
        header = json.loads(data[_PREAMBLE.size : _PREAMBLE.size + head_bytes])
        n_tokens, state_bytes = int(header["n_tokens"]), int(header["state_bytes"])
        spans = tuple(Span(int(s), int(n), int(p)) for s, n, p in header.get("mrope_spans", []))
    except (ValueError, KeyError, TypeError):
        raise SlotFileError(f"{path.name}: corrupt header") from None
    for field, ours in asdict(valid).items():
        if header.get(field) != ours:
            raise SlotFileError(f"{path.name}: written for another {field.replace('_', ' ')}")
    start = _PREAMBLE.size + head_bytes
    if len(data) != start + 4 * n_tokens + state_bytes:
        raise SlotFileError(f"{path.name}: truncated ({len(data)} bytes; the header says more)")
    tokens = data[start : start + 4 * n_tokens]
    state = bytearray(data[start + 4 * n_tokens :])
    if _sha256(tokens, state) != header.get("sha256"):
        raise SlotFileError(f"{path.name}: corrupt (checksum mismatch)")
    return Entry(
        np.frombuffer(tokens, dtype="<i4").astype(np.int32), _adapter_set(path, header, adapters), state, spans
    )


# --- slots and the tier (on the engine thread: Engine.call) ------------------------------------


def save_slot(scheduler: Scheduler, slot_id: int, path: Path, valid: Validity) -> tuple[int, int]:
    """Write a free slot's tokens and state to `path`: (tokens, bytes written)."""
    slot = _free_slot(scheduler, slot_id)
    tokens = np.asarray(slot.cache.tokens, dtype=np.int32)
    state = scheduler.runner.ctx.seq_state(slot.cache.seq_id)
    entry = Entry(tokens, slot.cache.lora, state, tuple(slot.cache.positions.spans))
    return tokens.size, write(path, entry, valid)


def restore_slot(
    scheduler: Scheduler, slot_id: int, path: Path, valid: Validity, adapters: Sequence = ()
) -> tuple[int, int]:
    """Load `path` into a free slot (what it held goes to the tier first): (tokens, bytes read).

    Raises SlotFileError for a file not valid here, or a state that does not fit the KV cache.
    """
    slot = _free_slot(scheduler, slot_id)
    entry = read(path, valid, adapters)
    if entry.tokens.size >= scheduler.n_ctx_per_seq:
        raise SlotFileError(f"{path.name}: {entry.tokens.size} tokens do not fit a slot of {scheduler.n_ctx_per_seq}")
    runner = scheduler.runner  # a LlamaRunner: slot files are a llama context's states
    if runner.prompt_cache is not None:
        runner.prompt_cache.stash(runner.ctx, slot.cache)
    if not runner.ctx.seq_state_set(slot.cache.seq_id, entry.state):
        slot.cache.tokens.clear()
        slot.cache.positions.spans.clear()
        raise SlotFileError(f"{path.name}: its state does not fit the KV cache now")
    slot.cache.tokens[:] = entry.tokens.tolist()
    slot.cache.positions.spans[:] = entry.spans
    slot.cache.lora = entry.lora
    return entry.tokens.size, path.stat().st_size


def erase_slot(scheduler: Scheduler, slot_id: int) -> int:
    """Forget a free slot's tokens; how many it held."""
    slot = _free_slot(scheduler, slot_id)
    n = len(slot.cache.tokens)
    slot.cache.forget(scheduler.runner.ctx)
    return n


def save_tier(cache: PromptCache, folder: Path, valid: Validity) -> int:
    """Write every tier entry to `folder` (--cache-persist, at shutdown), replacing what was there; files written."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"*{SUFFIX}"):
        old.unlink()
    entries = list(cache.entries())
    for i, entry in enumerate(entries):  # least recently used first: load_tier keeps the order
        write(folder / f"{i:06d}{SUFFIX}", entry, valid)
    return len(entries)


def load_tier(cache: PromptCache, folder: Path, valid: Validity, adapters: Sequence = ()) -> int:
    """Add the valid files of `folder` to the tier (at start-up); each other file is skipped with one log line."""
    loaded = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            entry = read(path, valid, adapters)
        except SlotFileError as error:
            logger.warning("prompt cache: skipped %s", error)
            continue
        loaded += cache.add(entry) is not None
    return loaded


def _free_slot(scheduler: Scheduler, slot_id: int):
    slot = scheduler.slots[slot_id]
    if slot.busy:
        raise SlotBusyError(f"slot {slot_id} is serving a request")
    return slot


def _adapter_set(path: Path, header: dict, adapters: Sequence) -> tuple:
    by_path = {str(adapter.path): adapter for adapter in adapters}
    try:
        named = [(by_path[str(p)], float(scale)) for p, scale in header.get("lora", [])]
    except KeyError as missing:
        raise SlotFileError(f"{path.name}: read under adapter {missing}, which is not loaded") from None
    except (TypeError, ValueError):
        raise SlotFileError(f"{path.name}: corrupt header") from None
    return tuple(named)


def _sha256(*parts: bytes | bytearray) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _sampled_sha256(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= 2 * 1024 * 1024 + _SAMPLES * _SAMPLE:
            digest.update(f.read())
            return digest.hexdigest()
        digest.update(f.read(1024 * 1024))
        for i in range(1, _SAMPLES + 1):
            f.seek(i * size // (_SAMPLES + 1))
            digest.update(f.read(_SAMPLE))
        f.seek(size - 1024 * 1024)
        digest.update(f.read())
    return digest.hexdigest()
