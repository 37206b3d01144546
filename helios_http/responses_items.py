"""Responses input items: checked into OpenAI's item shape, and a conversation's items as chat messages.

Items are kept in the shape OpenAI lists them (GET /v1/responses/{id}/input_items), each with an
id, and a stored response's output items are items of the same kinds: a conversation continued
with previous_response_id is its stored items followed by the new ones, read by `messages`.
"""

from __future__ import annotations

import secrets
from typing import Any

from helios_http import media, reasoning_fields
from helios_http.errors import invalid

INPUT_ROLES = ("user", "system", "developer")


def input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items in OpenAI's item shape, each with an id; a 400 naming the first bad one."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("input must be a string or a non-empty list of items", "input")
    return [_item(item, f"input[{i}]") for i, item in enumerate(value)]


def messages(instructions: str | None, context: list[dict], items: list[dict]) -> list[dict[str, Any]]:
    """Chat messages of a conversation: instructions as the system message, then every item in order.

    A function_call joins the assistant message before it (calls and their text are one turn); a
    function_call_output must answer a call made earlier in the conversation. A reasoning item is
    the thought of the assistant turn that follows it (its reasoning_content, for the template to
    keep or drop); followed by another user or tool item (an answer cut short while thinking), it
    is a turn of its own with no text; last of all, it has no turn to go with and is left out.
    """
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    called: set[str] = set()
    n_context = len(context)
    thought: dict[str, str] = {}  # the reasoning waiting for its assistant turn
    for position, item in enumerate([*context, *items]):
        kind = item["type"]
        if kind == "reasoning":
            text = _reasoning_text(item)
            where = f"input[{position - n_context}]"
            thought = (
                reasoning_fields.message_reasoning({"reasoning_content": text}, "assistant", where) if text else {}
            )
            continue
        assistant = kind == "function_call" or (kind == "message" and item["role"] == "assistant")
        if thought and not assistant:
            out.append({"role": "assistant", "content": "", **thought})
            thought = {}
        if kind == "message":
            where = f"input[{position - n_context}].content"
            parts = [_chat_part(p, f"{where}[{j}]") for j, p in enumerate(item["content"])]
            out.append({"role": item["role"], "content": parts})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if out and out[-1]["role"] == "assistant" and not thought:
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
            called.add(item["call_id"])
        elif kind == "function_call_output":
            if item["call_id"] not in called:
                where = f"input[{position - n_context}].call_id"
                raise invalid(
                    f"{where} {item['call_id']!r} answers no function_call earlier in the conversation", where
                )
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": _output_text(item["output"])})
        if assistant and thought:
            out[-1].update(thought)
            thought = {}
    return out


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# --- items ---------------------------------------------------------------------------------------


def _item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid(f"{where} must be an item object (a message, function_call or function_call_output)", where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message_item(item, where)
    if kind == "function_call":
        fields = {name: _string(item, name, where) for name in ("call_id", "name", "arguments")}
        return {"id": _id(item, "fc", where), "type": kind, "status": "completed", **fields}
    if kind == "function_call_output":
        return {
            "id": _id(item, "fco", where),
            "type": kind,
            "status": "completed",
            "call_id": _string(item, "call_id", where),
            "output": _call_output(item.get("output"), where),
        }
    if kind == "reasoning":
        return _reasoning_item(item, where)
    raise invalid(
        f"{where}.type {kind!r} is not an item this server reads: it reads message, function_call, "
        "function_call_output and reasoning items",
        f"{where}.type",
    )


def _message_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in (*INPUT_ROLES, "assistant"):
        raise invalid(f"{where}.role must be one of user, system, developer, assistant; got {role!r}", f"{where}.role")
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [{"type": text_type, "text": content}]
    elif isinstance(content, list):
        parts = [_part(part, f"{where}.content[{j}]", role) for j, part in enumerate(content)]
    else:
        raise invalid(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    out = {"id": _id(item, "msg", where), "type": "message", "role": role, "content": parts}
    return {**out, "status": "completed"} if role == "assistant" else out


def _reasoning_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A reasoning item: its summary_text parts and its reasoning_text parts (the thought itself, which
    OpenAI's open-weight models return and this server answers with)."""
    out = {"id": _id(item, "rs", where), "type": "reasoning"}
    for field, part_type in (("summary", "summary_text"), ("content", "reasoning_text")):
        parts = item.get(field)
        if parts is None and field == "content":
            continue
        if not isinstance(parts, list):
            raise invalid(
                f'{where}.{field} must be a list of {{"type": "{part_type}", "text": ...}} parts', f"{where}.{field}"
            )
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or part.get("type") != part_type or not isinstance(part.get("text"), str):
                at = f"{where}.{field}[{j}]"
                raise invalid(f'{at} must be a {part_type} part {{"type": "{part_type}", "text": ...}}', at)
        out[field] = [{"type": part_type, "text": part["text"]} for part in parts]
    if item.get("encrypted_content") is not None:
        out["encrypted_content"] = item["encrypted_content"]  # listed back as it came; no template reads it
    return out


def _reasoning_text(item: dict[str, Any]) -> str:
    # The thought itself where the item has it; else its summary, the nearest a template can get.
    parts = item.get("content") or item["summary"]
    return ("" if item.get("content") else "\n\n").join(part["text"] for part in parts)


def _part(part: Any, where: str, role: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text must be a string", f"{where}.text")
        return (
            {"type": "output_text", "text": text, "annotations": []}
            if role == "assistant"
            else {"type": "input_text", "text": text}
        )
    if kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind == "input_image" and role == "user":
        return media.responses_image(part, where)
    if kind in ("input_image", "input_file", "input_audio"):
        raise invalid(f"{where}: {kind} is not offered; this server reads text only", f"{where}.type")
    raise invalid(f'{where} must be a text part {{"type": "input_text", "text": ...}}', f"{where}.type")


def _call_output(value: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_part(part, f"{where}.output[{j}]", "user") for j, part in enumerate(value)]
    raise invalid(f"{where}.output must be a string or a list of input_text parts", f"{where}.output")


def _chat_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    if part["type"] == "input_image":
        return media.as_chat_image(part["image_url"], where)
    return {"type": "text", "text": _part_text(part)}


def _part_text(part: dict[str, Any]) -> str:
    return part["refusal"] if part["type"] == "refusal" else part["text"]


def _output_text(output: str | list[dict[str, Any]]) -> str:
    return output if isinstance(output, str) else "\n".join(p["text"] for p in output)


def _string(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or (name != "arguments" and not value):
        raise invalid(f"{where}.{name} must be a non-empty string", f"{where}.{name}")
    return value


def _id(item: dict[str, Any], prefix: str, where: str) -> str:
    value = item.get("id")
    if value is None:
        return new_item_id(prefix)
    if not isinstance(value, str):
        raise invalid(f"{where}.id must be a string", f"{where}.id")
    return value
