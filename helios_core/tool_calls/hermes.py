"""Hermes' format, <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>: Hermes, Qwen 2.5/3, Granite."""

from __future__ import annotations

import re

from helios_core.tool_calls.format import ToolCallFormat

_PROBE_CALL = re.compile(r'<tool_call>\s*\{\s*"name"\s*:\s*"probe_tool"')


def _read(parser, trigger: str):
    yield from parser.expect("{")
    yield from parser.call_object()
    yield from parser.expect("</tool_call>")


HERMES = ToolCallFormat(
    "hermes",
    ("<tool_call>",),
    ('<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>"),
    _read,
    separator="\n",
    specials=("<tool_call>", "</tool_call>"),  # text in Qwen's vocabulary, control tokens in some others
)


def detect(rendered: str) -> ToolCallFormat | None:
    return HERMES if _PROBE_CALL.search(rendered) else None
