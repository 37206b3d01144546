"""What a tool-call syntax is: `ToolCallFormat`, and the `Tool` and `ToolCall` values around it."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helios_core.tool_calls.parser import ToolCallParser

# How a format reads the calls after its trigger: a generator on the parser's reading primitives.
CallReader = Callable[["ToolCallParser", str], Generator]


NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


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
    read: reads the calls after a trigger, leniently (ToolCallParser calls it).
    arguments: how they are written: "json", one JSON object; "xml", a `<parameter=KEY>` tag with
        raw text per argument (qwen3_coder.py).
    """

    name: str
    triggers: tuple[str, ...]
    call: tuple[str, str, str]
    read: CallReader
    opening: str = ""
    separator: str | None = ", "
    closing: str = ""
    specials: tuple[str, ...] = ()
    arguments: str = "json"


def tools_of(definitions: Sequence[Mapping[str, Any]]) -> list[Tool]:
    """Tools from OpenAI tool definitions ({"type": "function", "function": {...}}) the caller has checked.

    Arguments are always an object: no parameters is an empty one, a schema without a type an object.
    """
    tools = []
    for definition in definitions:
        parameters = definition["function"].get("parameters")
        if parameters is None:
            parameters = NO_ARGUMENTS
        elif "type" not in parameters:
            parameters = {"type": "object", **parameters}
        tools.append(Tool(definition["function"]["name"], parameters))
    return tools
