"""Mistral's two formats: [TOOL_CALLS][{"name": "f", "arguments": {...}}] (v0.3, Nemo) and
[TOOL_CALLS]f[ARGS]{...} (Small 3.2, Devstral). Either is read as the other, since a model may mix them."""

from __future__ import annotations

from helios_core.tool_calls.format import ToolCallFormat
from helios_core.tool_calls.parser import Malformed

_MAX_NAME = 256  # characters of a function name in [TOOL_CALLS]name[ARGS] before we call it text


def _read(parser, trigger: str):
    ch = yield from parser.skip_space()
    if ch == "[":
        yield from parser.object_list(opened=True)
        return
    name = ""
    while True:  # [TOOL_CALLS]name[ARGS]{...}
        if ch is None or len(name) > _MAX_NAME:
            raise Malformed
        name += ch
        if name.endswith("[ARGS]"):
            break
        ch = yield from parser.char()
    name = name[: -len("[ARGS]")].strip()
    if not name:
        raise Malformed
    ch = yield from parser.skip_space()
    if ch is None:
        raise Malformed
    index = parser.start_call(name)
    yield from parser.value(ch, index)


MISTRAL = ToolCallFormat(
    "mistral",
    ("[TOOL_CALLS]",),
    ('{"name": "', '", "arguments": ', "}"),
    _read,
    opening="[TOOL_CALLS][",
    closing="]",
    specials=("[TOOL_CALLS]",),
)
MISTRAL_ARGS = ToolCallFormat(
    "mistral_args",
    ("[TOOL_CALLS]",),
    ("[TOOL_CALLS]", "[ARGS]", ""),
    _read,
    separator="",
    specials=("[TOOL_CALLS]", "[ARGS]"),
)


def detect(rendered: str) -> ToolCallFormat | None:
    if "[TOOL_CALLS]" not in rendered:
        return None
    return MISTRAL_ARGS if "[ARGS]" in rendered else MISTRAL
