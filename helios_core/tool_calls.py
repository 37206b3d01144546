"""Tool calls in generated text: the syntaxes models write them in, a parser for them, and grammars that constrain them.

A `ToolCallFormat` is one syntax, the one a chat template shows an assistant's calls in:

    generic   {"tool_calls": [{"name": "f", "arguments": {...}}]}   (chat.TOOLS_PREAMBLE asks for it)
    hermes    <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   (Hermes, Qwen 2.5/3, Granite)
    llama3    {"name": "f", "parameters": {...}}   (Llama 3.1-3.3; <|python_tag|> may open it)
    mistral   [TOOL_CALLS][{"name": "f", "arguments": {...}}]   (Mistral v0.3, Nemo)
    mistral_args   [TOOL_CALLS]f[ARGS]{...}   (Mistral Small 3.2, Devstral)

`format_for(template)` tells which one a template uses, from one probe render.

`grammar(tools, format, required=...)` writes a Lark grammar for llguidance
(helios_core.constraint.grammar) in which every call names one of `tools` and
its arguments are valid for that tool's `parameters` schema:

- required: the whole output is calls (one, or several when `parallel`).
- auto: free text, or free text then calls. The calls are constrained from
  the moment their opening text (the format's trigger) appears, through a
  lazy lexeme: until then the text is free, after it nothing but a valid
  call can follow.

`ToolCallParser` follows the generated text piece by piece and splits it
into content and calls (`Content`, `CallStart`, `CallArguments` events), so
that a stream carries a call's arguments as they are generated and never
shows the call's syntax as content. `parse(text, format)` is the same parser
over a whole text, so a streamed answer and a whole one always agree.

Pure functions over text: nothing here needs a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from helios_core.errors import ChatTemplateError

if TYPE_CHECKING:
    from helios_core.chat import ChatTemplate

__all__ = [
    "FORMATS",
    "GENERIC",
    "LENIENT",
    "HERMES",
    "LLAMA3",
    "MISTRAL",
    "MISTRAL_ARGS",
    "CallArguments",
    "CallStart",
    "Content",
    "Tool",
    "ToolCall",
    "ToolCallFormat",
    "ToolCallParser",
    "detect_format",
    "format_for",
    "gather",
    "grammar",
    "parse",
    "tools_of",
]


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name and the JSON schema of its arguments (an object)."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: the function's name and its arguments as the model wrote them (JSON text)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallFormat:
    """How a model writes tool calls.

    The calls of one answer are written as
    `opening + call + (separator + call)* + closing`, each call as
    `call[0] + name + call[1] + arguments + call[2]`; `opening + call[0]`
    starts with triggers[0], the text that tells calls from free text.
    separator None: the format carries one call per answer.
    specials: the marker texts that some vocabularies hold as control tokens.
    """

    name: str
    triggers: tuple[str, ...]
    call: tuple[str, str, str]
    opening: str = ""
    separator: str | None = ", "
    closing: str = ""
    specials: tuple[str, ...] = ()


GENERIC = ToolCallFormat(
    "generic", ('{"tool_calls"',), ('{"name": "', '", "arguments": ', "}"), opening='{"tool_calls": [', closing="]}"
)
HERMES = ToolCallFormat(
    "hermes",
    ("<tool_call>",),
    ('<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>"),
    separator="\n",
    specials=("<tool_call>", "</tool_call>"),  # text in Qwen's vocabulary, control tokens in some others
)
LLAMA3 = ToolCallFormat(
    "llama3",
    ('{"name"', "<|python_tag|>"),
    ('{"name": "', '", "parameters": ', "}"),
    separator=None,
    specials=("<|python_tag|>",),
)
MISTRAL = ToolCallFormat(
    "mistral",
    ("[TOOL_CALLS]",),
    ('{"name": "', '", "arguments": ', "}"),
    opening="[TOOL_CALLS][",
    closing="]",
    specials=("[TOOL_CALLS]",),
)
MISTRAL_ARGS = ToolCallFormat(
    "mistral_args", ("[TOOL_CALLS]",), ("[TOOL_CALLS]", "[ARGS]", ""), separator="", specials=("[TOOL_CALLS]", "[ARGS]")
)
FORMATS = {f.name: f for f in (GENERIC, HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS)}


# --- which format a template uses ---------------------------------------------------------

_PROBE_NAME = "probe_tool"
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": _PROBE_NAME, "description": "probe", "parameters": {"type": "object", "properties": {}}},
}
_PROBE_MESSAGES = [
    {"role": "user", "content": "probe question"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "probe0001",  # 9 letters and digits, as Mistral's templates demand
                "type": "function",
                "function": {"name": _PROBE_NAME, "arguments": '{"probe_arg": "probe_value"}'},
            }
        ],
    },
]
_HERMES_CALL = re.compile(r'<tool_call>\s*\{\s*"name"\s*:\s*"probe_tool"')
_LLAMA3_CALL = re.compile(r'\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*"probe_tool"\s*,\s*"parameters"')


def format_for(template: ChatTemplate) -> ToolCallFormat:
    """The format `template` shows an assistant's tool calls in; generic when it shows none we know.

    One render of a probe conversation (under a millisecond for most templates), as llama.cpp
    probes its templates: what a template writes is what its model was trained to write.
    """
    try:
        text = template.render(_PROBE_MESSAGES, [_PROBE_TOOL], add_generation_prompt=False)
    except ChatTemplateError:
        return GENERIC
    return detect_format(text)


def detect_format(rendered: str) -> ToolCallFormat:
    """The format of a probe conversation's rendering (see format_for): its call of `probe_tool`."""
    if "[TOOL_CALLS]" in rendered:
        return MISTRAL_ARGS if "[ARGS]" in rendered else MISTRAL
    if _HERMES_CALL.search(rendered):
        return HERMES
    if _LLAMA3_CALL.search(rendered):
        return LLAMA3
    return GENERIC


# --- grammars -----------------------------------------------------------------------------

# Arguments as Python's json.dumps writes them, as helios_core.constraint writes JSON: a grammar
# with free whitespace lets a small model write newlines until max_tokens.
# lenient: keywords llguidance does not implement (propertyNames, some formats) are left unchecked instead of
# refusing the tool. Agent clients (Claude Code, Codex) send schemas generated from their own types, and a
# tool the model may call within the rest of its schema beats a request refused, as llama-server's grammars do.
LENIENT = {"lenient": True}
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", **LENIENT}
_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


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
        rules.append(
            _rule(
                f"tool_{i}",
                _literal(tool.name + fmt.call[1], specials),
                _json(tool.parameters or _NO_ARGUMENTS),
                _literal(fmt.call[2], specials),
            )
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


# --- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """Text of the answer that is no part of a call."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """Call `index` (0, 1, ... in the answer) names function `name`; its arguments follow."""

    index: int
    name: str


@dataclass(frozen=True)
class CallArguments:
    """More of call `index`'s arguments (JSON text; the fragments joined are the whole)."""

    index: int
    text: str


Event = Content | CallStart | CallArguments


class _Malformed(Exception):
    """The text after a trigger is not a call after all."""


_WHITESPACE = " \t\r\n"
_MAX_NAME = 256  # characters of a function name in [TOOL_CALLS]name[ARGS] before we call it text


class ToolCallParser:
    """Splits generated text, fed piece by piece, into content and calls of format `fmt`.

    feed(text) returns the events the text settles; finish() those the end settles (text held
    back as a possible trigger, a call cut short). Text that may still turn out to open a call is
    held back, and so is whitespace until what follows it is known: whitespace around calls is
    no content. Syntax is read leniently (any whitespace, keys in any order, arguments as an
    object or as JSON text), since models write their own format with small variations; text
    after a trigger that is no call after all is given back as content. Work per character is
    constant: each piece costs its own length.
    """

    def __init__(self, fmt: ToolCallFormat):
        self.format = fmt
        self.n_calls = 0
        self._triggers = fmt.triggers
        self._firsts = {t[0] for t in fmt.triggers}
        self._region = {
            "generic": self._generic_region,
            "hermes": self._hermes_region,
            "llama3": self._llama3_region,
            "mistral": self._mistral_region,  # either Mistral syntax reads as the other
            "mistral_args": self._mistral_region,
        }[fmt.name]
        self._events: list[tuple] = []
        self._held_space = ""  # whitespace not yet known to be content
        self._back: list[str] = []  # characters to read again (last pushed, first read)
        self._raw: list[str] | None = None  # what the current call region has read, to give back as text
        self._region_calls = 0
        self._ended = False
        self._machine = self._run()
        next(self._machine)

    def feed(self, text: str) -> list[Event]:
        send = self._machine.send
        for ch in text:
            send(ch)
        return self._take()

    def finish(self) -> list[Event]:
        """The events the end of the text settles; feed nothing after."""
        if not self._ended:
            try:
                self._machine.send(None)
            except StopIteration:
                pass
        return self._take()

    # --- the state machine: a coroutine fed one character at a time (None: the end) ---------

    def _run(self):
        while True:
            trigger = yield from self._text()
            if trigger is None:
                return
            yield from self._call_region(trigger)

    def _char(self):
        if self._back:
            ch = self._back.pop()
        elif self._ended:
            return None
        else:
            ch = yield
            if ch is None:
                self._ended = True
                return None
        if self._raw is not None:
            self._raw.append(ch)
        return ch

    def _text(self):
        """Content until a trigger (returned), or None at the end."""
        pending = ""  # a prefix of some trigger
        while True:
            ch = yield from self._char()
            if ch is None:
                self._content(pending)
                if self._held_space and not self.n_calls:
                    self._events.append(("text", self._held_space))
                return None
            if not pending and ch not in self._firsts:
                self._content(ch)
                continue
            pending += ch
            start = 0
            while pending[start:] and not any(t.startswith(pending[start:]) for t in self._triggers):
                start += 1
            self._content(pending[:start])
            pending = pending[start:]
            if pending in self._triggers:
                return pending

    def _content(self, text: str) -> None:
        if not text:
            return
        if text.isspace():
            self._held_space += text
            return
        kept = text.rstrip(_WHITESPACE)
        self._events.append(("text", self._held_space + kept))
        self._held_space = text[len(kept) :]

    def _call_region(self, trigger: str):
        """The calls after `trigger`. Text that turns out to be no call goes back to the content;
        a call the end cuts short (max_tokens) does not: it is syntax, never content."""
        self._raw = [trigger]
        self._region_calls = 0
        space, self._held_space = self._held_space, ""  # whitespace before a call is no content
        try:
            yield from self._region(trigger)
        except _Malformed:
            if not self._ended:
                offending = self._raw.pop()
                if not self._region_calls:
                    self._held_space = space
                    self._content("".join(self._raw))
                self._back.append(offending)  # read again as text: it may open the next call
        self._raw = None

    def _generic_region(self, trigger: str):
        yield from self._expect(":")
        yield from self._object_list()
        yield from self._expect("}")

    def _hermes_region(self, trigger: str):
        yield from self._expect("{")
        yield from self._call_object()
        yield from self._expect("</tool_call>")

    def _llama3_region(self, trigger: str):
        if trigger == "<|python_tag|>":
            yield from self._expect("{")
            yield from self._call_object()
        else:  # the trigger is the object's start, {"name"
            yield from self._call_object(first_key="name")

    def _mistral_region(self, trigger: str):
        ch = yield from self._skip_space()
        if ch == "[":
            yield from self._object_list(opened=True)
            return
        name = ""
        while True:  # [TOOL_CALLS]name[ARGS]{...}
            if ch is None or len(name) > _MAX_NAME:
                raise _Malformed
            name += ch
            if name.endswith("[ARGS]"):
                break
            ch = yield from self._char()
        name = name[: -len("[ARGS]")].strip()
        if not name:
            raise _Malformed
        ch = yield from self._skip_space()
        if ch is None:
            raise _Malformed
        index = self._start_call(name)
        yield from self._value(ch, index)

    def _object_list(self, opened: bool = False):
        """[ {call}, {call}, ... ] (from after the "[" when opened)."""
        if not opened:
            yield from self._expect("[")
        ch = yield from self._skip_space()
        if ch == "]":
            return
        while True:
            if ch != "{":
                raise _Malformed
            yield from self._call_object()
            ch = yield from self._skip_space()
            if ch == "]":
                return
            if ch != ",":
                raise _Malformed
            ch = yield from self._skip_space()

    def _call_object(self, first_key: str | None = None):
        """A call's JSON object, from after its "{": keys name, arguments (or parameters), and any others.

        When the name comes first, the arguments stream as they are read; otherwise they come whole.
        """
        name: str | None = None
        arguments: str | None = None
        index: int | None = None
        key = first_key
        while True:
            if key is None:
                ch = yield from self._skip_space()
                if ch != '"':
                    raise _Malformed
                key = _decoded_string((yield from self._value(ch)))
            yield from self._expect(":")
            ch = yield from self._skip_space()
            if ch is None:
                raise _Malformed
            if key in ("arguments", "parameters") and name is not None and index is None and ch in "{[":
                index = self._start_call(name)
                yield from self._value(ch, index)
            else:
                raw = yield from self._value(ch)
                if key == "name":
                    name = _decoded_string(raw)
                elif key in ("arguments", "parameters") and index is None:
                    arguments = _decoded_string(raw) if raw.startswith('"') else raw
            key = None
            ch = yield from self._skip_space()
            if ch == "}":
                break
            if ch != ",":
                raise _Malformed
        if index is None:
            if name is None:
                raise _Malformed
            index = self._start_call(name)
            self._events.append(("args", index, arguments if arguments is not None else "{}"))

    def _value(self, ch: str, index: int | None = None):
        """The JSON value that starts with `ch`, as text; streamed as call `index`'s arguments when given."""
        out: list[str] = []

        def put(c: str) -> None:
            if index is None:
                out.append(c)
            else:
                self._events.append(("args", index, c))

        if ch in '{["':
            depth, in_string, escaped = 0, False, False
            while True:
                if ch is None:
                    raise _Malformed
                put(ch)
                if in_string:
                    if escaped:
                        escaped = False
                    elif ch == "\\":
                        escaped = True
                    elif ch == '"':
                        in_string = False
                elif ch == '"':
                    in_string = True
                elif ch in "{[":
                    depth += 1
                elif ch in "}]":
                    depth -= 1
                if depth == 0 and not in_string:
                    return "".join(out)
                ch = yield from self._char()
        while ch is not None and ch not in ",}]" and ch not in _WHITESPACE:  # a number, true, false or null
            put(ch)
            ch = yield from self._char()
        if ch is None:
            raise _Malformed
        self._back.append(ch)
        if self._raw:
            self._raw.pop()
        if not out and index is None:
            raise _Malformed
        return "".join(out)

    def _skip_space(self):
        ch = yield from self._char()
        while ch is not None and ch in _WHITESPACE:
            ch = yield from self._char()
        return ch

    def _expect(self, text: str):
        """`text` after optional whitespace, else the text is no call."""
        ch = yield from self._skip_space()
        for i, want in enumerate(text):
            if i:
                ch = yield from self._char()
            if ch != want:
                raise _Malformed

    def _start_call(self, name: str) -> int:
        index = self.n_calls
        self.n_calls += 1
        self._region_calls += 1
        self._events.append(("call", index, name))
        return index

    def _take(self) -> list[Event]:
        """The events since the last call, adjacent text and argument pieces joined."""
        events: list[Event] = []
        for item in self._events:
            last = events[-1] if events else None
            if item[0] == "text":
                if isinstance(last, Content):
                    events[-1] = Content(last.text + item[1])
                else:
                    events.append(Content(item[1]))
            elif item[0] == "args":
                if isinstance(last, CallArguments) and last.index == item[1]:
                    events[-1] = CallArguments(item[1], last.text + item[2])
                else:
                    events.append(CallArguments(item[1], item[2]))
            else:
                events.append(CallStart(item[1], item[2]))
        self._events = []
        return events


def parse(text: str, fmt: ToolCallFormat) -> tuple[str, list[ToolCall]]:
    """The content and the calls of a whole answer (what ToolCallParser yields, put together)."""
    parser = ToolCallParser(fmt)
    return gather([*parser.feed(text), *parser.finish()])


def gather(events: Sequence[Event]) -> tuple[str, list[ToolCall]]:
    """Events put together: the content, and each call with its whole arguments."""
    content: list[str] = []
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, Content):
            content.append(event.text)
        elif isinstance(event, CallStart):
            names[event.index] = event.name
            arguments[event.index] = []
        else:
            arguments[event.index].append(event.text)
    return "".join(content), [ToolCall(names[i], "".join(arguments[i])) for i in sorted(names)]


def _decoded_string(raw: str) -> str:
    try:
        value = json.loads(raw)
    except ValueError:
        raise _Malformed from None
    if not isinstance(value, str):
        raise _Malformed
    return value


def tools_of(definitions: Sequence[Mapping[str, Any]]) -> list[Tool]:
    """Tools from OpenAI tool definitions ({"type": "function", "function": {...}}) the caller has checked.

    Arguments are always an object: no parameters is an empty one, a schema without a type an object.
    """
    tools = []
    for definition in definitions:
        parameters = definition["function"].get("parameters")
        if parameters is None:
            parameters = _NO_ARGUMENTS
        elif "type" not in parameters:
            parameters = {"type": "object", **parameters}
        tools.append(Tool(definition["function"]["name"], parameters))
    return tools
