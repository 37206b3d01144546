"""Slots over HTTP, in llama-server's shapes: GET /slots, POST /slots/{id_slot}?action=save|restore|erase.

save and restore take {"filename": NAME}: a plain file name inside --slot-save-path, never a
path (anything with a separator, "..", or a leading dot is a 400 naming `filename`). A file
is restored only if it is valid here (helios_core.slot_files: model, llama.cpp build,
context, control vectors, adapter set, checksum); otherwise the answer is a 400 saying why.
An action on a slot serving a request waits for it to be free, as llama-server defers it.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import Response

from helios_core import slot_files
from helios_core.engine import EngineShutdownError
from helios_core.slot_files import SlotBusyError, SlotFileError
from helios_http.errors import APIError, invalid, shutting_down
from helios_http.responses import json_response
from helios_http.state import ServerState

# How long an action waits for a busy slot before a 409.
BUSY_WAIT_SECONDS = 60.0
_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


async def slots(request: Request) -> Response:
    """GET /slots: each slot's id, n_ctx, is_processing and the tokens it holds (n_prompt_tokens)."""
    state = _ready(request)

    def listing(scheduler) -> list[dict]:
        return [
            {
                "id": i,
                "n_ctx": scheduler.n_ctx_per_seq,
                "speculative": scheduler.speculation is not None,
                "is_processing": slot.busy,
                "n_prompt_tokens": len(slot.cache.tokens),
            }
            for i, slot in enumerate(scheduler.slots)
        ]

    return json_response(await _on_engine(state, listing))


async def slot_action(request: Request) -> Response:
    """POST /slots/{id_slot}?action=save|restore|erase."""
    state = _ready(request)
    if state.slot_save_path is None:
        raise APIError(
            501,
            "This server does not support slots action. Start it with `--slot-save-path`",
            type="not_supported_error",
        )
    try:
        id_slot = int(request.path_params["id_slot"])
    except ValueError:
        raise invalid("id_slot must be a slot number", "id_slot") from None
    if not 0 <= id_slot < state.engine.n_slots:
        raise invalid(f"id_slot must lie in [0, {state.engine.n_slots}); got {id_slot}", "id_slot")
    action = request.query_params.get("action")
    if action == "erase":
        n_erased = await _on_engine(state, lambda s: slot_files.erase_slot(s, id_slot))
        return json_response({"id_slot": id_slot, "n_erased": n_erased})
    if action not in ("save", "restore"):
        raise invalid(f"action must be save, restore or erase; got {action!r}", "action")
    filename = await _filename(request)
    path = state.slot_save_path / filename
    started = time.perf_counter()
    if action == "save":
        tokens, size = await _on_engine(state, lambda s: slot_files.save_slot(s, id_slot, path, state.slot_validity))
        names = ("n_saved", "n_written", "save_ms")
    else:
        if not path.is_file():
            raise invalid(f"no saved slot named {filename!r}", "filename")
        try:
            tokens, size = await _on_engine(
                state, lambda s: slot_files.restore_slot(s, id_slot, path, state.slot_validity, state.lora)
            )
        except SlotFileError as error:
            raise invalid(f"Unable to restore slot: {error}", "filename") from None
        names = ("n_restored", "n_read", "restore_ms")
    # llama-server's shapes: {id_slot, filename, n_saved, n_written, timings: {save_ms}} and the restore's likewise
    return json_response(
        {
            "id_slot": id_slot,
            "filename": filename,
            names[0]: tokens,
            names[1]: size,
            "timings": {names[2]: 1000 * (time.perf_counter() - started)},
        }
    )


async def _filename(request: Request) -> str:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON: {e}") from None
    filename = body.get("filename") if isinstance(body, dict) else None
    if not isinstance(filename, str):
        raise invalid("filename is required: a file name inside --slot-save-path", "filename")
    if not _FILENAME.fullmatch(filename) or ".." in filename or Path(filename).name != filename:
        raise invalid(
            "Invalid filename: a plain name of letters, digits, '.', '_' and '-' (no path, no '..')", "filename"
        )
    return filename


async def _on_engine(state: ServerState, fn):
    """fn(scheduler) on the engine thread; retried while its slot is busy, for at most BUSY_WAIT_SECONDS."""
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while True:
        try:
            return await asyncio.wrap_future(state.engine.call(fn))
        except EngineShutdownError:
            raise shutting_down() from None
        except SlotBusyError as error:
            if time.monotonic() > deadline:
                raise APIError(409, f"{error}; retry once it is done", code="slot_busy") from None
            await asyncio.sleep(0.05)


def _ready(request: Request) -> ServerState:
    state: ServerState = request.app.state.helios
    state.ready_engine()  # a 503 while the model loads
    return state
