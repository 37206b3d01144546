"""Grammars that constrain tool calls: a Lark grammar (llguidance's dialect) per set of tools and format."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from helios_core.tool_calls.format import NO_ARGUMENTS, Tool, ToolCallFormat
from helios_core.tool_calls.llama3 import LLAMA3
from helios_core.tool_calls.qwen3_coder import VALUE_END, choices_of, definitions, writes_text

# Arguments as Python's json.dumps writes them, as helios_core.constraint writes JSON: a grammar
# with free whitespace lets a small model write newlines until max_tokens.
# lenient: keywords llguidance does not implement (propertyNames, some formats) are left unchecked instead of
# refusing the tool. Agent clients (Claude Code, Codex) send schemas generated from their own types, and a
# tool the model may call within the rest of its schema beats a request refused, as llama-server's grammars do.
LENIENT = {"lenient": True}
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", **LENIENT}


def grammar(
    tools: Sequence[Tool],
    fmt: ToolCallFormat,
    *,
    required: bool,
    parallel: bool = True,
    specials: Mapping[str, int] | None = None,
    text_schema: Mapping[str, Any] | None = None,
) -> str:
    """A Lark grammar (llguidance's dialect) for an answer that calls `tools` in format `fmt`.

    required: the answer is calls only (tool_choice "required", or a named function: pass that one
        tool); otherwise free text, or free text followed by calls (tool_choice "auto").
    parallel: allow several calls (formats without a separator carry one).
    specials: {marker text: token id} for the format's markers that are control tokens of the
        model's vocabulary: the grammar names the token, as the model was trained to write it.
    text_schema: a JSON schema the free text must follow instead (response_format with "auto").
    """
    if not tools:
        raise ValueError("a tool-call grammar needs at least one tool")
    specials = dict(specials or {})
    lead = fmt.opening + fmt.call[0]
    more = parallel and fmt.separator is not None
    rules = [
        _rule("calls_rest", "call", "more_call*" if more else "", _literal(fmt.closing, specials)),
        _rule("call", " | ".join(f"tool_{i}" for i in range(len(tools)))),
    ]
    if more:
        rules.append(_rule("more_call", _literal(fmt.separator + fmt.call[0], specials), "call"))
    for i, tool in enumerate(tools):
        if fmt.arguments == "xml":
            arguments, parameter_rules = _xml_parameters(tool.parameters or NO_ARGUMENTS, f"tool_{i}")
            rules += parameter_rules
        else:
            arguments = _json(tool.parameters or NO_ARGUMENTS)
        rules.append(
            _rule(f"tool_{i}", _literal(tool.name + fmt.call[1], specials), arguments, _literal(fmt.call[2], specials))
        )
    if required:
        start = [_rule("start", _literal(lead, specials), "calls_rest")]
    elif text_schema is not None and lead.startswith("{"):
        # Both answers open with "{", where llguidance takes one lexeme class: two %json alternatives
        # share one (it merges them, as an anyOf), a %json and a literal would not.
        start = [_rule("start", _json(text_schema), "|", _json(_calls_schema(tools, fmt, more)))]
    elif text_schema is not None:  # a JSON answer, or calls (no free text)
        start = [_rule("start", _json(text_schema), "|", _literal(lead, specials), "calls_rest")]
    else:
        trigger = fmt.triggers[0]
        start = [_rule("start", "TEXT", "|", "calls_hd", _literal(lead[len(trigger) :], specials), "calls_rest")]
        if trigger in specials:  # a control token cannot be part of TEXT: it ends the text by itself
            start.append(_rule("calls_hd", "TEXT", _literal(trigger, specials)))
        else:  # lazy: the text ends at the first trigger, after which only calls may follow
            start.append(_rule("calls_hd[lazy]", "TEXT", _literal(trigger, specials)))
    return "\n".join(["%llguidance {}", *start, *rules, r"TEXT: /(.|\n)*/", ""])


def _xml_parameters(parameters: Mapping[str, Any], prefix: str) -> tuple[str, list[str]]:
    """A tool's arguments as <parameter=KEY> tags (qwen3_coder.py), in the schema's order, the
    required ones always: (the Lark for them, the rules it names).

    A value that may be a string is raw text up to VALUE_END, within its lengths, as the templates
    write strings; one of given choices is one of them, written so; any other value is the JSON of
    its schema, which keeps the references into the arguments' $defs.
    """
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    defs = definitions(parameters)
    tail = json.dumps(VALUE_END)
    sequence, rules = [], []
    for j, (key, schema) in enumerate(properties.items()):
        schema = schema if isinstance(schema, Mapping) else {}  # true: any value
        rule = f"{prefix}_{j}"
        head = json.dumps(f"<parameter={key}>\n")
        choices = choices_of(schema)
        if choices:
            spelled = (c if isinstance(c, str) else json.dumps(c) for c in choices)
            rules.append(_rule(rule, head, "(" + " | ".join(json.dumps(c) for c in spelled) + ")", tail))
        elif writes_text(schema, defs):  # lazy: the text ends at the first VALUE_END
            rules.append(_rule(f"{rule}[lazy]", head, _text_of_length(schema), tail))
        else:
            rules.append(_rule(rule, head, _json({**defs, **schema}), tail))
        sequence.append(rule if key in required else f"{rule}?")
    return " ".join(sequence), rules


def _text_of_length(schema: Mapping[str, Any]) -> str:
    """Raw text within the schema's minLength and maxLength (its pattern and format go unchecked)."""
    low, high = schema.get("minLength"), schema.get("maxLength")
    if not isinstance(low, int) and not isinstance(high, int):
        return "TEXT"
    low = low if isinstance(low, int) else 0
    return f"/(.|\\n){{{low},{high if isinstance(high, int) else ''}}}/"


def _json(schema: Mapping[str, Any]) -> str:
    return "%json " + json.dumps({"x-guidance": _COMPACT, **schema}, ensure_ascii=False)


def _calls_schema(tools: Sequence[Tool], fmt: ToolCallFormat, parallel: bool) -> dict[str, Any]:
    """The calls of the JSON formats (generic, llama3) as one JSON schema, for grammars that need one."""
    key = "parameters" if fmt is LLAMA3 else "arguments"
    if fmt is LLAMA3:
        where = "#/anyOf/{i}/properties/parameters"
    else:
        where = "#/properties/tool_calls/items/anyOf/{i}/properties/arguments"
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, key: _rebased(t.parameters, where.format(i=i))},
            "required": ["name", key],
            "additionalProperties": False,
        }
        for i, t in enumerate(tools)
    ]
    if fmt is LLAMA3:
        return {"anyOf": calls}
    array = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
    if not parallel:
        array["maxItems"] = 1
    return {
        "type": "object",
        "properties": {"tool_calls": array},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }


def _rebased(schema: Any, root: str) -> Any:
    """`schema` with its local references ("#/$defs/X") pointing into it where it now sits, at `root`."""
    if isinstance(schema, Mapping):
        return {
            k: root + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebased(v, root)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebased(v, root) for v in schema]
    return schema


def _rule(name: str, *parts: str) -> str:
    return f"{name}: " + " ".join(p for p in parts if p)


def _literal(text: str, specials: Mapping[str, int]) -> str:
    """`text` as Lark: string literals, and <[id]> for the parts that are control tokens."""
    if not text:
        return ""
    pieces = re.split("(" + "|".join(map(re.escape, specials)) + ")", text) if specials else [text]
    return " ".join(f"<[{specials[p]}]>" if p in specials else json.dumps(p, ensure_ascii=False) for p in pieces if p)
