"""ToolCallParser: generated text, fed piece by piece, split into content and tool calls.

The parser is a coroutine fed one character at a time. It owns the text between calls (content,
held-back triggers and whitespace) and the JSON reading every format shares; each format's
module says how its calls read after their trigger, in the primitives here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from helios_core.tool_calls.format import Tool, ToolCall, ToolCallFormat


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


class Malformed(Exception):
    """The text after a trigger is not a call after all."""


_WHITESPACE = " \t\r\n"


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

    def __init__(self, fmt: ToolCallFormat, tools: Sequence[Tool] = ()):
        """tools: the ones offered, for formats whose arguments are not JSON to read them by their schemas."""
        self.format = fmt
        self._parameters = {tool.name: tool.parameters for tool in tools}
        self.n_calls = 0
        self._triggers = fmt.triggers
        self._firsts = {t[0] for t in fmt.triggers}
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
    # char, unread, skip_space, expect, until, value, object_list, call_object, start_call and
    # arguments are the reading primitives each format's `read` is written in (see generic.py, hermes.py, ...).

    def _run(self):
        while True:
            trigger = yield from self._text()
            if trigger is None:
                return
            yield from self._call_region(trigger)

    def char(self):
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
            ch = yield from self.char()
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
            yield from self.format.read(self, trigger)
        except Malformed:
            if not self._ended:
                offending = self._raw.pop()
                if not self._region_calls:
                    self._held_space = space
                    self._content("".join(self._raw))
                self._back.append(offending)  # read again as text: it may open the next call
        self._raw = None

    def object_list(self, opened: bool = False):
        """[ {call}, {call}, ... ] (from after the "[" when opened)."""
        if not opened:
            yield from self.expect("[")
        ch = yield from self.skip_space()
        if ch == "]":
            return
        while True:
            if ch != "{":
                raise Malformed
            yield from self.call_object()
            ch = yield from self.skip_space()
            if ch == "]":
                return
            if ch != ",":
                raise Malformed
            ch = yield from self.skip_space()

    def call_object(self, first_key: str | None = None):
        """A call's JSON object, from after its "{": keys name, arguments (or parameters), and any others.

        When the name comes first, the arguments stream as they are read; otherwise they come whole.
        """
        name: str | None = None
        arguments: str | None = None
        index: int | None = None
        key = first_key
        while True:
            if key is None:
                ch = yield from self.skip_space()
                if ch != '"':
                    raise Malformed
                key = _decoded_string((yield from self.value(ch)))
            yield from self.expect(":")
            ch = yield from self.skip_space()
            if ch is None:
                raise Malformed
            if key in ("arguments", "parameters") and name is not None and index is None and ch in "{[":
                index = self.start_call(name)
                yield from self.value(ch, index)
            else:
                raw = yield from self.value(ch)
                if key == "name":
                    name = _decoded_string(raw)
                elif key in ("arguments", "parameters") and index is None:
                    arguments = _decoded_string(raw) if raw.startswith('"') else raw
            key = None
            ch = yield from self.skip_space()
            if ch == "}":
                break
            if ch != ",":
                raise Malformed
        if index is None:
            if name is None:
                raise Malformed
            index = self.start_call(name)
            self._events.append(("args", index, arguments if arguments is not None else "{}"))

    def value(self, ch: str, index: int | None = None):
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
                    raise Malformed
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
                ch = yield from self.char()
        while ch is not None and ch not in ",}]" and ch not in _WHITESPACE:  # a number, true, false or null
            put(ch)
            ch = yield from self.char()
        if ch is None:
            raise Malformed
        self.unread(ch)
        if not out and index is None:
            raise Malformed
        return "".join(out)

    def skip_space(self):
        ch = yield from self.char()
        while ch is not None and ch in _WHITESPACE:
            ch = yield from self.char()
        return ch

    def expect(self, text: str):
        """`text` after optional whitespace, else the text is no call."""
        ch = yield from self.skip_space()
        for i, want in enumerate(text):
            if i:
                ch = yield from self.char()
            if ch != want:
                raise Malformed

    def until(self, *ends: str, limit: int | None = None, emit: Callable[[str], None] | None = None):
        """Raw text up to the first of `ends`, and which one it was; no call when the text ends first
        (or runs past `limit` characters). Constant work per character, however long the text.

        emit: given the text as it is read, less what may still turn out to be the start of an end.
        """
        out: list[str] = []
        longest = max(map(len, ends))
        tail = ""
        emitted = 0
        while True:
            ch = yield from self.char()
            if ch is None or (limit is not None and len(out) > limit):
                raise Malformed
            out.append(ch)
            tail = (tail + ch)[-longest:]
            for end in ends:
                if tail.endswith(end):
                    if emit is not None and len(out) - len(end) > emitted:
                        emit("".join(out[emitted : len(out) - len(end)]))
                    return "".join(out[: len(out) - len(end)]), end
            if emit is not None and len(out) - emitted >= longest:
                emit("".join(out[emitted : len(out) - longest + 1]))
                emitted = len(out) - longest + 1

    def unread(self, ch: str | None) -> None:
        """Give back the character just read: the next char() reads it again."""
        if ch is not None:
            self._back.append(ch)
            if self._raw:
                self._raw.pop()

    def parameters_of(self, name: str) -> Mapping[str, Any]:
        """The JSON schema of offered tool `name`'s arguments; empty for a tool not offered."""
        return self._parameters.get(name) or {}

    def arguments(self, index: int, text: str) -> None:
        """More of call `index`'s arguments, as JSON text (for formats that write them otherwise)."""
        self._events.append(("args", index, text))

    def start_call(self, name: str) -> int:
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


def parse(text: str, fmt: ToolCallFormat, tools: Sequence[Tool] = ()) -> tuple[str, list[ToolCall]]:
    """The content and the calls of a whole answer (what ToolCallParser yields, put together)."""
    parser = ToolCallParser(fmt, tools)
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
        raise Malformed from None
    if not isinstance(value, str):
        raise Malformed
    return value
