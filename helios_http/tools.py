"""OpenAI's tools over HTTP: `tools`, `tool_choice` and `parallel_tool_calls` in, `tool_calls` out.

A request's tools are checked here (a bad name or schema is a 400 naming the field), then,
once the chat template is known, `plan` decides what the output may be:

- "none": the template still shows the tools (as OpenAI and llama-server do: the model
  knows what it called earlier in the conversation), the output is neither constrained nor
  parsed, and the answer is text.
- "required", or a named function: the whole output is constrained to calls in the
  template's format (helios_core.tool_calls), each naming an offered function with
  arguments valid for its schema. A named function is called exactly once (as vLLM does);
  "required" with parallel_tool_calls false is exactly one call, else one or more.
- "auto": free text, or text followed by calls; a call is constrained from its opening
  text on, so a started call is always valid.

Each choice's text then goes through a ToolCallParser: `settle` turns a whole choice into
content and `tool_calls`; `CallFollower` turns a stream's steps into OpenAI's deltas.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from helios_core import constraint, tool_calls
from helios_core.chat import ChatTemplate
from helios_core.errors import ConstraintError
from helios_core.generate import Step
from helios_core.tool_calls import CallArguments, CallStart, Content, Tool, ToolCallFormat, ToolCallParser
from helios_core.vocab import Vocab
from helios_http.errors import invalid
from helios_http.shapes import Choice

if TYPE_CHECKING:
    from helios_http.sampling_fields import SamplingFields

CHOICES = ("none", "auto", "required")
# OpenAI's rule for function names.
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_TOOLS = 128  # as OpenAI


@dataclass(frozen=True)
class ToolsRequest:
    """The tools part of a chat request, checked.

    definitions: the tools as OpenAI defines them, for the chat template.
    choice: "none", "auto" or "required"; a named function is "required" with `function` set.
    """

    definitions: list[dict[str, Any]]
    choice: str
    function: str | None = None
    parallel: bool = True

    def offered(self) -> list[tool_calls.Tool]:
        """The tools a call may name: all of them, or the one tool_choice names."""
        tools = tool_calls.tools_of(self.definitions)
        return [t for t in tools if t.name == self.function] if self.function else tools


@dataclass(frozen=True)
class ToolPlan:
    """How one request's answers are read for calls: their format, and the control tokens it writes.

    specials: token id -> text of the format's markers that are control tokens of the model's
    vocabulary (Mistral's [TOOL_CALLS]): generated text leaves them out, the parser needs them.
    tools: the ones offered, whose schemas read arguments written as raw text (qwen3_coder).
    """

    format: ToolCallFormat
    specials: dict[int, str] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()


def parse_tools(body: dict[str, Any], parallel: bool) -> ToolsRequest | None:
    """`tools` and `tool_choice` of a chat request body; None when it offers no tools."""
    raw = body.get("tools")
    if raw is not None and not isinstance(raw, list):
        raise invalid('tools must be a list of {"type": "function", "function": {...}} objects', "tools")
    if raw is not None and len(raw) > MAX_TOOLS:
        raise invalid(f"tools holds {len(raw)} tools; one request takes at most {MAX_TOOLS}", "tools")
    definitions = [_tool(t, i) for i, t in enumerate(raw or [])]
    names = [d["function"]["name"] for d in definitions]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise invalid(f"tools[{i}].function.name {name!r} is given twice", f"tools[{i}].function.name")
    choice, function = _tool_choice(body.get("tool_choice"), names)
    if not definitions:
        return None
    return ToolsRequest(definitions, choice, function, parallel)


def plan(
    request: ToolsRequest | None, template: ChatTemplate, vocab: Vocab, sampling: SamplingFields
) -> ToolPlan | None:
    """Constrain a request's output to its tool choice (sets sampling.constraint); None when no calls are read.

    A response_format (or llama-server's json_schema) still shapes a text answer under "auto"; under
    "required" there is no text answer for it to shape. llama-server's grammar cannot be combined with tools.
    """
    if request is None or request.choice == "none":
        return None
    fmt = tool_calls.format_for(template)
    specials = control_tokens(vocab, fmt.specials)
    forced = request.choice == "required"
    text_schema = None
    if sampling.constraint is not None:
        if sampling.constraint.kind != "json_schema":
            raise invalid(
                f'{sampling.constraint_param} cannot be combined with tools; give tool_choice "none" or leave it out',
                sampling.constraint_param,
            )
        if not forced:
            text_schema = json.loads(sampling.constraint.source)
    offered = request.offered()
    lark = tool_calls.grammar(
        offered,
        fmt,
        required=forced,
        parallel=request.parallel and request.function is None,  # a named function is called once, as vLLM does
        specials={text: token for token, text in specials.items()},
        text_schema=text_schema,
    )
    try:
        sampling.constraint = constraint.grammar(lark)
    except ConstraintError as error:
        raise invalid(f"tools: {error}", "tools") from None
    sampling.constraint_param = "tools"
    return ToolPlan(fmt, specials, tuple(offered))


class CallFollower:
    """One choice's answer, step by step: content and tool-call deltas in OpenAI's stream shape.

    The first delta of a call carries its index, id, type and function name (arguments ""),
    the next ones pieces of its arguments; text that is part of the call syntax is never content.
    """

    def __init__(self, plan: ToolPlan):
        self._parser = ToolCallParser(plan.format, plan.tools)
        self._specials = plan.specials
        self.ids: list[str] = []

    def feed(self, step: Step) -> list[dict[str, Any]]:
        """The deltas one generated step settles."""
        text = step.text + self._specials.get(step.token, "")
        return self._deltas(self._parser.feed(text)) if text else []

    def finish(self) -> list[dict[str, Any]]:
        """The deltas the end of the answer settles (held-back text, a call cut short)."""
        return self._deltas(self._parser.finish())

    def finish_reason(self, reason: str | None) -> str | None:
        """OpenAI's "tool_calls" for an answer that ended on its own after calls; "length" stays."""
        return "tool_calls" if self._parser.n_calls and reason == "stop" else reason

    def _deltas(self, events) -> list[dict[str, Any]]:
        deltas = []
        for event in events:
            if isinstance(event, Content):
                deltas.append({"content": event.text})
            elif isinstance(event, CallStart):
                self.ids.append(new_call_id())
                function = {"name": event.name, "arguments": ""}
                call = {"index": event.index, "id": self.ids[-1], "type": "function", "function": function}
                deltas.append({"tool_calls": [call]})
            elif isinstance(event, CallArguments):
                deltas.append({"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]})
        return deltas


def settle(choice: Choice, plan: ToolPlan) -> None:
    """A whole (non-streamed) choice read for calls: its text becomes the content, and its tool_calls are set."""
    follower = CallFollower(plan)
    deltas = [d for step in choice.steps for d in follower.feed(step)] + follower.finish()
    choice.text = [d["content"] for d in deltas if "content" in d]
    calls: list[dict[str, Any]] = []
    for delta in deltas:
        for piece in delta.get("tool_calls", ()):
            if "id" in piece:
                calls.append({"id": piece["id"], "type": "function", "function": dict(piece["function"])})
            else:
                calls[piece["index"]]["function"]["arguments"] += piece["function"]["arguments"]
    choice.tool_calls = calls or None
    choice.finish_reason = follower.finish_reason(choice.finish_reason)


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def control_tokens(vocab: Vocab, texts: tuple[str, ...]) -> dict[int, str]:
    """{token: text} for each of `texts` that the vocabulary holds as one control token (it prints nothing)."""
    return vocab.control_tokens(texts)


# --- request fields ------------------------------------------------------------------------


def _tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise invalid(f'{where} must be an object {{"type": "function", "function": {{...}}}}', where)
    if tool.get("type", "function") != "function":
        raise invalid(f'{where}.type must be "function"; got {tool.get("type")!r}', f"{where}.type")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise invalid(f"{where}.function must be an object with name, description and parameters", f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise invalid(
            f"{where}.function.name must be 1 to 64 letters, digits, underscores or dashes; got {name!r}",
            f"{where}.function.name",
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid(f"{where}.function.description must be a string", f"{where}.function.description")
    parameters = function.get("parameters")
    if parameters is not None:
        _check_parameters(parameters, f"{where}.function.parameters")
    return {"type": "function", "function": {k: v for k, v in function.items() if v is not None}}


def _check_parameters(parameters: Any, where: str) -> None:
    if not isinstance(parameters, dict):
        raise invalid(f"{where} must be a JSON schema object", where)
    kind = parameters.get("type", "object")
    if kind != "object":
        raise invalid(f'{where} must describe an object (type "object"); got type {kind!r}', where)
    try:
        constraint.json_schema({"x-guidance": tool_calls.LENIENT, **parameters})  # as the calls' grammar reads it
    except ConstraintError as error:
        raise invalid(f"{where}: {error}", where) from None


def _tool_choice(value: Any, names: list[str]) -> tuple[str, str | None]:
    if value is None:
        return ("auto" if names else "none"), None
    if isinstance(value, str):
        if value not in CHOICES:
            raise invalid(
                f"tool_choice must be one of {', '.join(CHOICES)} or a function; got {value!r}", "tool_choice"
            )
        if value == "required" and not names:
            raise invalid('tool_choice "required" needs tools to call', "tool_choice")
        return value, None
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise invalid(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if name not in names:
        offered = ", ".join(names) if names else "no tools are offered"
        raise invalid(f"tool_choice names function {name!r}, which is not among tools ({offered})", "tool_choice")
    return "required", name
