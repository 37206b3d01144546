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
# What ends a parameter's value, for the reader and the grammar alike (a value may hold "</parameter>").
VALUE_END = "\n</parameter>\n"
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def _read(parser, trigger: str):
    if trigger == "<tool_call>":
        yield from parser.expect("<function=")
    name, _ = yield from parser.until(">", limit=_MAX_NAME)
    name = name.strip()
    if not name:
        raise Malformed
    index = parser.start_call(name)
    parameters = parser.parameters_of(name)
    properties, defs = parameters.get("properties") or {}, definitions(parameters)
    opened = False
    while True:
        yield from parser.expect("<")
        tag, _ = yield from parser.until(">", limit=_MAX_NAME)
        if tag.strip() == "/function":
            break
        if not tag.startswith("parameter="):
            raise Malformed
        key = tag[len("parameter=") :].strip()
        ch = yield from parser.char()  # the newline after the tag, as the grammar writes it
        if ch != "\n":
            parser.unread(ch)
        named = (", " if opened else "{") + json.dumps(key, ensure_ascii=False) + ": "
        opened = True
        schema = properties.get(key)
        if schema is None or value_types(schema, defs) == {"string"}:  # a string whatever it says: streamed
            parser.arguments(index, named + '"')
            yield from parser.until(VALUE_END, emit=lambda text: parser.arguments(index, _escaped(text)))
            parser.arguments(index, '"')
        else:  # typed once whole
            value, _ = yield from parser.until(VALUE_END)
            parser.arguments(index, named + _json_of(value, schema, defs))
    parser.arguments(index, "}" if opened else "{}")
    if trigger == "<tool_call>":
        yield from parser.expect("</tool_call>")


def _escaped(text: str) -> str:
    """`text` as it stands inside a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _json_of(value: str, schema: Any, defs: Mapping[str, Any]) -> str:
    """A parameter's text as JSON: the JSON it spells where the schema allows that JSON's type, else
    the text as a string."""
    allowed = value_types(schema, defs)
    text = {"True": "true", "False": "false"}.get(value, value)  # as the templates print Python's booleans
    try:
        parsed = json.loads(text)
    except ValueError:
        return json.dumps(value, ensure_ascii=False)
    kind = _JSON_TYPES.get(type(parsed), "null")
    if allowed is None or kind in allowed or (kind == "integer" and "number" in allowed):
        if kind != "string":
            return json.dumps(parsed, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def definitions(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments' $defs (or definitions), which their properties may reference."""
    return {key: parameters[key] for key in ("$defs", "definitions") if key in parameters}


def value_types(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> set[str] | None:
    """The JSON types a value of `schema` may have; None: any. References into `defs` are followed."""
    if not isinstance(schema, Mapping) or depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = defs
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        return value_types(target, defs, depth + 1)
    choices = choices_of(schema)
    if choices is not None:
        return {_JSON_TYPES.get(type(c), "null") for c in choices}
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return set(kind)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list):
        found: set[str] = set()
        for branch in branches:
            types = value_types(branch, defs, depth + 1)
            if types is None:
                return None
            found |= types
        return found
    return None


def choices_of(schema: Mapping[str, Any]) -> list | None:
    """The values a schema allows by `enum` or `const`; None when it names none."""
    choices = schema.get("enum", [schema["const"]] if "const" in schema else None)
    return choices if isinstance(choices, list) else None


def writes_text(schema: Any, defs: Mapping[str, Any]) -> bool:
    """Whether a parameter of this schema is written as raw text: whenever it may be a string, as the
    templates write strings (Optional[str] and a free-form value included)."""
    types = value_types(schema, defs)
    return types is None or "string" in types


def write_arguments(arguments: str) -> str:
    """JSON arguments as the format writes them (what its grammar produces)."""
    return "".join(
        f"<parameter={key}>\n{value if isinstance(value, str) else json.dumps(value)}{VALUE_END}"
        for key, value in json.loads(arguments).items()
    )


QWEN3_CODER = ToolCallFormat(
    "qwen3_coder",
    ("<tool_call>", "<function="),  # models sometimes leave out the <tool_call> around a call
    ("<tool_call>\n<function=", ">\n", "</function>\n</tool_call>"),
    _read,
    separator="\n",
    specials=("<tool_call>", "</tool_call>"),
    arguments="xml",
)


def detect(rendered: str) -> ToolCallFormat | None:
    return QWEN3_CODER if "<function=probe_tool>" in rendered and "<parameter=probe_arg>" in rendered else None
