"""Qwen3-Coder's XML format: Qwen3-Coder, Qwen3.5, Nemotron 3 Nano, Step 3.5.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

A parameter's value is raw text, not JSON: a string stays as written, and a value whose schema
says it is no string (a number, an object) is read as the JSON it spells. So the reader needs the
offered tools' schemas (ToolCallParser's `tools`), and the grammar writes each parameter on its
own: strings as free text up to the closing tag, other values as JSON of their schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from helios_core.tool_calls.format import ToolCallFormat
from helios_core.tool_calls.parser import Malformed

_MAX_NAME = 256  # characters of a function or parameter name before we call it text


def _read(parser, trigger: str):
    yield from parser.expect("<function=")
    name, _ = yield from parser.until(">", limit=_MAX_NAME)
    name = name.strip()
    if not name:
        raise Malformed
    index = parser.start_call(name)
    properties = parser.parameters_of(name).get("properties") or {}
    opened = False
    while True:
        yield from parser.expect("<")
        tag, _ = yield from parser.until(">", limit=_MAX_NAME)
        if tag.strip() == "/function":
            break
        if not tag.startswith("parameter="):
            raise Malformed
        key = tag[len("parameter=") :].strip()
        value, end = yield from parser.until("</parameter>", "</function>")
        value = value.removeprefix("\n").removesuffix("\n")
        pair = json.dumps(key, ensure_ascii=False) + ": " + _json_of(value, properties.get(key))
        parser.arguments(index, (", " if opened else "{") + pair)
        opened = True
        if end == "</function>":  # a parameter left open: the function's end closes it
            break
    parser.arguments(index, "}" if opened else "{}")
    yield from parser.expect("</tool_call>")


def _json_of(value: str, schema: Any) -> str:
    """A parameter's text as JSON: a string unless its schema says otherwise and the text is JSON."""
    if schema is None or writes_text(schema):
        return json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(json.loads(value), ensure_ascii=False)
    except ValueError:
        return json.dumps(value, ensure_ascii=False)


def writes_text(schema: Any) -> bool:
    """Whether a parameter of this schema is written as raw text: a string, or one of given strings."""
    if not isinstance(schema, Mapping):
        return False
    choices = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if choices is not None:
        return bool(choices) and all(isinstance(c, str) for c in choices)
    return schema.get("type") == "string"


def write_arguments(arguments: str) -> str:
    """JSON arguments as the format writes them (what its grammar produces)."""
    return "".join(
        f"<parameter={key}>\n{value if isinstance(value, str) else json.dumps(value)}\n</parameter>\n"
        for key, value in json.loads(arguments).items()
    )


QWEN3_CODER = ToolCallFormat(
    "qwen3_coder",
    ("<tool_call>",),
    ("<tool_call>\n<function=", ">\n", "</function>\n</tool_call>"),
    _read,
    separator="\n",
    specials=("<tool_call>", "</tool_call>"),
    arguments="xml",
)


def detect(rendered: str) -> ToolCallFormat | None:
    return QWEN3_CODER if "<function=probe_tool>" in rendered and "<parameter=probe_arg>" in rendered else None
