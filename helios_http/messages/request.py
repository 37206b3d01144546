"""A Messages body as the one internal request: Anthropic's own fields translated into chat's, then parse_chat.

Anthropic's fields become chat completions' (system -> a system message, tool_use blocks ->
an assistant's tool_calls, tool_result blocks -> tool messages, input_schema -> parameters,
tool_choice any -> required, stop_sequences -> stop, thinking -> the reasoning budget, thinking
blocks -> an assistant's reasoning_content), and every other field goes to
parse_chat as it is: temperature, top_p, top_k, stream, and helios's extension fields
(sampler, processors, lora, logit_bias, min_p, json_schema, ...) mean what they mean on chat.

Errors name Anthropic's fields (tools[0].input_schema, messages[2].content[1].tool_use_id),
never the chat body this builds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from helios_http import media, reasoning_fields
from helios_http.errors import APIError, invalid
from helios_http.sampling_fields import MAX_STOPS
from helios_http.schemas import ChatRequest, parse_chat

# Translated here; the rest of a body goes to parse_chat untouched.
OWN_FIELDS = ("system", "messages", "max_tokens", "stop_sequences", "tools", "tool_choice", "metadata", "thinking")
# Chat completions' fields that have no place in a Messages answer, or a name of Anthropic's.
REFUSED_FIELDS = {
    "n": "a Messages answer holds one message",
    "logprobs": "a Messages answer has no place for logprobs",
    "top_logprobs": "a Messages answer has no place for logprobs",
    "stream_options": "a Messages stream reports usage in message_start and message_delta by itself",
    "stop": "use stop_sequences",
    "max_completion_tokens": "use max_tokens",
    "parallel_tool_calls": "use tool_choice.disable_parallel_tool_use",
    # ... and Anthropic's fields for what runs on Anthropic's servers.
    "mcp_servers": "the MCP connector runs on Anthropic's servers; give the tools as tools",
    "container": "there is no code execution container here",
}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


@dataclass
class MessagesRequest:
    """A Messages body, checked. chat: what the engine runs; model: the model the body named (None: none)."""

    chat: ChatRequest
    model: str | None


def parse_messages(body: dict[str, Any], served_model: str, *, count_only: bool = False) -> MessagesRequest:
    """The body as the chat request it means, run by `served_model` (the name after aliases, which may pick
    a LoRA adapter). count_only: count_tokens' body, which has no max_tokens."""
    for name, hint in REFUSED_FIELDS.items():
        if body.get(name) is not None:
            raise invalid(f"{name} is not taken on /v1/messages: {hint}", name)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("model must be a string", "model")
    chat: dict[str, Any] = {key: value for key, value in body.items() if key not in OWN_FIELDS}
    chat["model"] = served_model
    chat["messages"] = _system(body.get("system")) + _messages(body.get("messages"))
    # A final assistant message with text is a prefill: Anthropic's model continues it.
    final = chat["messages"][-1]
    chat["continue_final_message"] = final["role"] == "assistant" and bool(final["content"])
    if body.get("max_tokens") is None and not count_only:
        raise invalid("max_tokens is required: the most tokens to generate", "max_tokens")
    if not count_only:
        chat["max_tokens"] = body["max_tokens"]
    chat["stop"] = _stop_sequences(body.get("stop_sequences"))
    tools = _tools(body.get("tools"))
    if tools is not None:
        chat["tools"] = tools
    choice, parallel = _tool_choice(body.get("tool_choice"), bool(tools))
    if choice is not None:
        chat["tool_choice"] = choice
    if parallel is not None:
        chat["parallel_tool_calls"] = parallel
    _metadata(body.get("metadata"))
    try:
        parsed = parse_chat(chat)
    except APIError as error:
        raise _in_anthropic_terms(error) from None
    _thinking(parsed, body.get("thinking"), None if count_only else body.get("max_tokens"))
    return MessagesRequest(parsed, model)


# --- system and messages ---------------------------------------------------------------------

# Claude Code opens its system prompt with a line whose cch= stamp changes on every request; the stamp
# means nothing to a model, and left as it is no prompt would share a cached prefix past it.
_BILLING_STAMP = re.compile(r"\A(x-anthropic-billing-header:[^\n]*?\bcch=)[0-9a-fA-F]+;")


def _system(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, list):
        text = "\n".join(_text_of(block, f"system[{j}]") for j, block in enumerate(raw))
    else:
        raise invalid('system must be a string or a list of {"type": "text", "text": ...} blocks', "system")
    text = _BILLING_STAMP.sub(r"\g<1>00000;", text)
    return [{"role": "system", "content": text}] if text else []


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise invalid("messages must be a non-empty list of {role, content} objects", "messages")
    out: list[dict[str, Any]] = []
    called: set[str] = set()  # the ids of the tool_use blocks so far: a tool_result answers one of them
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLE_BLOCKS:
            raise invalid(f'{where}.role must be "user" or "assistant"; got {role!r}', f"{where}.role")
        blocks = _blocks(message.get("content"), where)
        texts, items, thoughts = _read_blocks(blocks, where, role, called)
        if role == "system":
            out.append({"role": "system", "content": "\n".join(texts)})
        elif role == "assistant":
            text = "\n".join(texts)
            if i == len(raw) - 1 and text:  # a prefill, continued (parse_messages): checked as Anthropic does
                if items:
                    raise invalid(f"{where}: a final assistant message with tool_use cannot be continued", where)
                if text != text.rstrip():
                    raise invalid("final assistant content cannot end with trailing whitespace", f"{where}.content")
            message = {"role": "assistant", "content": text, **({"tool_calls": items} if items else {})}
            if thoughts:  # the template keeps this turn's thinking or drops it, as it was trained to
                message |= reasoning_fields.message_reasoning({"reasoning_content": "\n".join(thoughts)}, role, where)
            out.append(message)
        else:
            out += items  # tool results first: Anthropic's clients put them before any text of the turn
            if texts or not items:
                out.append({"role": "user", "content": _user_content(texts)})
    return out


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content must be a string or a list of content blocks", f"{where}.content")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid(
                f'{where}.content[{j}] must be a content block, an object with a "type"', f"{where}.content[{j}]"
            )
    return content


# The blocks each role may send beside text. Claude Code sends system messages mid-conversation (its beta
# mid-conversation-system-2026-04-07): they reach the chat template as system messages.
_ROLE_BLOCKS = {
    "assistant": ("tool_use", "thinking", "redacted_thinking"),
    "user": ("tool_result", "image"),
    "system": (),
}


def _read_blocks(
    blocks: list[dict[str, Any]], where: str, role: str, called: set[str]
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """A message's texts; its tool_use blocks as chat's tool_calls or its tool_result blocks as tool messages;
    and its thinking blocks' text."""
    texts, items, thoughts = [], [], []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            texts.append(_text_of(block, at))
        elif kind not in _ROLE_BLOCKS[role]:
            _refuse_block(kind, at, ("text", *_ROLE_BLOCKS[role]))
        elif kind == "tool_use":
            items.append(_tool_use(block, at))
            called.add(items[-1]["id"])
        elif kind == "tool_result":
            items.append(_tool_result(block, at, called))
        elif kind == "image":  # chat's image_url part, in its place among the texts
            texts.append(media.messages_image(block, at))
        elif kind == "thinking":
            if not isinstance(block.get("thinking"), str):
                raise invalid(f"{at}.thinking must be a string, the block's thought", f"{at}.thinking")
            thoughts.append(block["thinking"])
        # redacted_thinking: Claude's encrypted thought, which no template here can read
    return texts, items, thoughts


def _user_content(texts: list) -> str | list[dict[str, Any]]:
    """A user turn's texts joined, or chat's parts where images are among them."""
    if all(isinstance(text, str) for text in texts):
        return "\n".join(texts)
    return [text if isinstance(text, dict) else {"type": "text", "text": text} for text in texts]


def _text_of(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise invalid(f'{where} must be a text block {{"type": "text", "text": ...}}', where)
    if "\0" in block["text"]:
        # Chat templates are applied by llama.cpp to C strings: the text after a NUL would vanish.
        raise invalid(f"{where}.text contains a NUL character (U+0000), which a prompt cannot carry", f"{where}.text")
    return block["text"]


def _tool_use(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{where}.id must be the tool_use block's id, a non-empty string", f"{where}.id")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}.name must be the name of the tool called", f"{where}.name")
    if not isinstance(arguments, dict):
        raise invalid(f"{where}.input must be an object, the tool's arguments", f"{where}.input")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def _tool_result(block: dict[str, Any], where: str, called: set[str]) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or call_id not in called:
        raise invalid(
            f"{where}.tool_use_id {call_id!r} matches no tool_use block of an earlier assistant message",
            f"{where}.tool_use_id",
        )
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = _text_of({"type": "text", "text": content}, f"{where}.content")
    elif isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") != "text":
                _refuse_block(part.get("type"), f"{where}.content[{k}]", ("text",))
            parts.append(_text_of(part, f"{where}.content[{k}]"))
        text = "\n".join(parts)
    else:
        raise invalid(f"{where}.content must be a string or a list of text blocks", f"{where}.content")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise invalid(f"{where}.is_error must be true or false", f"{where}.is_error")
    # Chat templates have no place for a failed call: the model reads it in the text.
    return {"role": "tool", "tool_call_id": call_id, "content": f"Error: {text}" if is_error else text}


def _refuse_block(kind: Any, where: str, allowed: tuple[str, ...]) -> None:
    if kind == "document":
        raise invalid(f"{where}: document blocks are not read here; send text", f"{where}.type")
    raise invalid(
        f"{where}.type must be one of {', '.join(allowed)} here; got {kind!r}",
        f"{where}.type",
    )


# --- the other fields ------------------------------------------------------------------------


def _stop_sequences(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw) or len(raw) > MAX_STOPS:
        raise invalid(f"stop_sequences must be a list of at most {MAX_STOPS} strings", "stop_sequences")
    return raw


def _tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise invalid('tools must be a list of {"name", "description", "input_schema"} objects', "tools")
    out = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f'{where} must be an object {{"name", "description", "input_schema"}}', where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise invalid(
                f"{where}.type {kind!r} is a tool that Anthropic's servers or clients run; this server "
                'offers custom tools only ({"name", "description", "input_schema"})',
                f"{where}.type",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid(f"{where}.input_schema must be a JSON schema object", f"{where}.input_schema")
        function = {"name": tool.get("name"), "description": tool.get("description"), "parameters": schema}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(raw: Any, has_tools: bool) -> tuple[Any, bool | None]:
    """Chat's tool_choice and parallel_tool_calls for Anthropic's tool_choice (None: not given)."""
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise invalid(
            'tool_choice must be {"type": "auto"}, {"type": "any"}, {"type": "tool", "name": ...} or {"type": "none"}',
            "tool_choice",
        )
    if kind in ("any", "tool") and not has_tools:
        raise invalid(f'tool_choice {{"type": "{kind}"}} needs tools to call', "tool_choice")
    disable = raw.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise invalid(
            "tool_choice.disable_parallel_tool_use must be true or false", "tool_choice.disable_parallel_tool_use"
        )
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str):
            raise invalid('tool_choice {"type": "tool"} needs the name of the tool', "tool_choice.name")
        choice: Any = {"type": "function", "function": {"name": name}}
    else:
        choice = _TOOL_CHOICES[kind]
    return choice, None if disable is None else not disable


def _metadata(raw: Any) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise invalid('metadata must be an object such as {"user_id": ...}', "metadata")
    if raw.get("user_id") is not None and not isinstance(raw["user_id"], str):
        raise invalid("metadata.user_id must be a string", "metadata.user_id")


def _thinking(parsed: ChatRequest, raw: Any, max_tokens: Any) -> None:
    """thinking as the request's reasoning budget (reasoning_fields.apply_thinking). Anthropic's own floor of
    1024 budget tokens is not kept: a small local model thinks usefully in fewer, and llama-server takes any."""
    reasoning_fields.apply_thinking(parsed, raw)
    budget = raw.get("budget_tokens") if isinstance(raw, dict) and raw.get("type") == "enabled" else None
    if isinstance(budget, int) and isinstance(max_tokens, int) and budget >= max_tokens:
        raise invalid(
            f"thinking.budget_tokens ({budget}) must be less than max_tokens ({max_tokens})", "thinking.budget_tokens"
        )


# Chat's names for the fields translated above, and Anthropic's.
_RENAMES = [
    (re.compile(r"tools\[(\d+)\]\.function\.parameters"), r"tools[\1].input_schema"),
    (re.compile(r"tools\[(\d+)\]\.function\.(\w+)"), r"tools[\1].\2"),
    (re.compile(r"tools\[(\d+)\]\.function\b"), r"tools[\1]"),
]


def _in_anthropic_terms(error: APIError) -> APIError:
    for pattern, replacement in _RENAMES:
        error.message = pattern.sub(replacement, error.message)
        if error.param is not None:
            error.param = pattern.sub(replacement, error.param)
    return error
