"""Messages made fit for a template: null content as "", and tools and calls in the generic JSON form
for templates that cannot show them (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from helios_core.errors import ChatTemplateError

Message = Mapping[str, Any]  # {"role", "content", and for tools "tool_calls" / "tool_call_id" / "name"}

TOOLS_PREAMBLE = (
    "You can call the tools below. To call tools, answer with only a JSON object of the form "
    '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}.\n\nTools:\n'
)


def plain(message: Message, index: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"message {index} is not an object")
    plain = dict(message)
    if plain.get("content") is None:
        plain["content"] = ""
    return plain


def with_tools_described(
    messages: list[dict[str, Any]], tools: list[Mapping[str, Any]], *, system_role: bool = True
) -> list[dict[str, Any]]:
    """The tools described at the end of the system message (added first when there is none), or, for a
    template that refuses system messages, at the start of the first user message."""
    described = TOOLS_PREAMBLE + "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    if system_role:
        first = messages[0] if messages else {}
        if first.get("role") == "system" and isinstance(first.get("content"), str):
            text = f"{first['content']}\n\n{described}" if first["content"] else described
            return [{**first, "content": text}, *messages[1:]]
        return [{"role": "system", "content": described}, *messages]
    for i, message in enumerate(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            text = f"{described}\n\n{message['content']}" if message["content"] else described
            return [*messages[:i], {**message, "content": text}, *messages[i + 1 :]]
    return [{"role": "user", "content": described}, *messages]


def generic_tool_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls and results as text, for templates that know only role and content."""
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = json.dumps({"tool_calls": [_generic_call(c) for c in m["tool_calls"]]}, ensure_ascii=False)
            content = f"{m['content']}\n{calls}" if m["content"] else calls
            out.append({"role": "assistant", "content": content})
        elif m.get("role") == "tool":
            response = {k: m[k] for k in ("tool_call_id", "name") if m.get(k) is not None}
            response["content"] = m["content"]
            out.append({"role": "user", "content": json.dumps({"tool_response": response}, ensure_ascii=False)})
        else:
            out.append(m)
    return out


def with_object_arguments(message: dict[str, Any]) -> dict[str, Any]:
    """The message with each tool call's JSON-text arguments decoded (copies; the caller's dicts stay as given)."""
    calls = message.get("tool_calls")
    if not calls or not isinstance(calls, list):
        return message
    decoded = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        arguments = _decoded(function.get("arguments")) if isinstance(function, Mapping) else None
        if isinstance(arguments, dict):
            call = {**call, "function": {**function, "arguments": arguments}}
        decoded.append(call)
    return {**message, "tool_calls": decoded}


def _decoded(arguments: Any) -> Any:
    """JSON text decoded; anything else (or text that is not JSON) as it is."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            pass
    return arguments


def _generic_call(call: Any) -> dict[str, Any]:
    function = call.get("function", call) if isinstance(call, Mapping) else {}
    # OpenAI's JSON text is shown as the object it encodes, the form TOOLS_PREAMBLE asks for.
    generic = {"name": function.get("name"), "arguments": _decoded(function.get("arguments"))}
    if isinstance(call, Mapping) and call.get("id") is not None:
        generic["id"] = call["id"]
    return generic
