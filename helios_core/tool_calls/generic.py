"""The generic format, {"tool_calls": [{"name": "f", "arguments": {...}}]}: what chat.TOOLS_PREAMBLE asks
a model without a tool syntax of its own to write."""

from __future__ import annotations

from helios_core.tool_calls.format import ToolCallFormat


def _read(parser, trigger: str):
    yield from parser.expect(":")
    yield from parser.object_list()
    yield from parser.expect("}")


GENERIC = ToolCallFormat(
    "generic",
    ('{"tool_calls"',),
    ('{"name": "', '", "arguments": ', "}"),
    _read,
    opening='{"tool_calls": [',
    closing="]}",
)
