"""Llama 3.1-3.3's format, {"name": "f", "parameters": {...}}, which <|python_tag|> may open: one call an answer."""

from __future__ import annotations

import re

from helios_core.tool_calls.format import ToolCallFormat

_PROBE_CALL = re.compile(r'\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*"probe_tool"\s*,\s*"parameters"')


def _read(parser, trigger: str):
    if trigger == "<|python_tag|>":
        yield from parser.expect("{")
        yield from parser.call_object()
    else:  # the trigger is the object's start, {"name"
        yield from parser.call_object(first_key="name")


LLAMA3 = ToolCallFormat(
    "llama3",
    ('{"name"', "<|python_tag|>"),
    ('{"name": "', '", "parameters": ', "}"),
    _read,
    separator=None,
    specials=("<|python_tag|>",),
)


def detect(rendered: str) -> ToolCallFormat | None:
    return LLAMA3 if _PROBE_CALL.search(rendered) else None
