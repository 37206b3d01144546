"""OpenAI's Responses request, translated into the one internal request (schemas.ChatRequest).

A Responses body differs from a chat body in its envelope, not its substance:

- `input` (a string, or items) and `instructions` become chat messages: message items keep
  their role, `function_call` items become an assistant's `tool_calls`, `function_call_output`
  items become `tool` messages; a `reasoning` item becomes the following assistant turn's
  reasoning_content, which the chat template keeps or drops as it was trained to.
- `text.format` becomes `response_format`, `max_output_tokens` becomes `max_tokens`,
  `reasoning.effort` becomes `reasoning_effort` (reasoning_fields.apply_effort), function
  tools and `tool_choice` take chat's shapes; everything else in the body (temperature, top_p,
  helios's and llama-server's extension fields) goes to `parse_chat` as it came, so each
  sampling field, limit and tool rule is defined once, in schemas.py and tools.py.

Anything we cannot honour is a 400 naming the field: built-in tools, background work, images
and files, server-side prompt templates and conversations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from helios_http import reasoning_fields
from helios_http.errors import APIError, invalid
from helios_http.responses_items import input_items, messages
from helios_http.schemas import ChatRequest, boolean_field, parse_chat

# Fields of a Responses body that are translated here, never handed to parse_chat as they came.
RESPONSES_FIELDS = frozenset(
    {
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "include",
        "top_logprobs",
        "metadata",
        "user",
        "store",
        "previous_response_id",
        "stream",
        "stream_options",
        "reasoning",
        "truncation",
        "background",
        "prompt",
        "conversation",
        "max_tool_calls",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "parallel_tool_calls",
    }
)
# Chat fields whose Responses counterpart has another name: given here, they are a 400 pointing to it.
CHAT_ONLY = {
    "messages": "input",
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "logprobs": 'include: ["message.output_text.logprobs"]',
    "n": "one response per request (send several requests)",
}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# include values we honour (logprobs) or that are vacuous here: no reasoning is encrypted, and the
# built-in tools whose results the others name are refused anyway.
INCLUDES = frozenset(
    {
        LOGPROBS_INCLUDE,
        "reasoning.encrypted_content",
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
    }
)
MAX_METADATA = 16  # keys, as OpenAI


@dataclass
class ResponsesRequest:
    """A Responses body, checked: the chat request it runs as, and what its answer and the store need.

    items: this request's input items in OpenAI's item shape, each with an id (input_items lists them).
    context: the items of the conversation before them (previous_response_id's), oldest first.
    echo: the request's parameters as the response object repeats them.
    """

    chat: ChatRequest
    items: list[dict[str, Any]]
    context: list[dict[str, Any]]
    echo: dict[str, Any]
    store: bool
    previous_response_id: str | None
    logprobs: bool  # output_text parts carry logprobs (include)


def previous_id(body: dict[str, Any]) -> str | None:
    """previous_response_id, checked: the response whose conversation this request continues."""
    value = body.get("previous_response_id")
    if value is not None and (not isinstance(value, str) or not value):
        raise invalid("previous_response_id must be a response's id, a string", "previous_response_id")
    return value


def parse_responses(body: dict[str, Any], context: list[dict[str, Any]]) -> ResponsesRequest:
    """The body as a ChatRequest; context: the stored items of previous_response_id's conversation."""
    _refuse_what_we_cannot_honour(body)
    items = input_items(body.get("input"))
    include = _include(body.get("include"))
    top_logprobs = body.get("top_logprobs")
    logprobs = LOGPROBS_INCLUDE in include or bool(top_logprobs)
    chat_body = {key: value for key, value in body.items() if key not in RESPONSES_FIELDS}
    chat_body["messages"] = messages(_instructions(body), context, items)
    tools = _tools(body.get("tools"))
    if tools:
        chat_body["tools"] = tools
    if body.get("tool_choice") is not None:
        chat_body["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        chat_body["parallel_tool_calls"] = body["parallel_tool_calls"]
    text_format = _text_format(body.get("text"))
    if text_format is not None:
        chat_body["response_format"] = text_format
    if body.get("max_output_tokens") is not None:
        chat_body["max_tokens"] = body["max_output_tokens"]
    chat_body["stream"] = body.get("stream")
    chat_body["logprobs"] = logprobs
    chat_body["top_logprobs"] = top_logprobs
    try:
        chat = parse_chat(chat_body)
    except APIError as error:
        raise in_responses_terms(error) from None
    reasoning_fields.apply_effort(chat, body.get("reasoning"))
    store = boolean_field(body, "store", True)
    return ResponsesRequest(chat, items, context, _echo(body, chat, include), store, previous_id(body), logprobs)


# --- refusals and envelope fields ---------------------------------------------------------------


def _refuse_what_we_cannot_honour(body: dict[str, Any]) -> None:
    for name, instead in CHAT_ONLY.items():
        if body.get(name) is not None:
            raise invalid(f"{name} is a field of chat completions; the Responses API takes {instead}", name)
    if boolean_field(body, "background", False):
        raise invalid(
            "background responses are not offered: this server answers while the request is open", "background"
        )
    for name, why in (
        ("prompt", "stored prompt templates live on OpenAI's servers; send input and instructions"),
        ("conversation", "conversations are not stored here; use previous_response_id"),
        ("max_tool_calls", "it bounds built-in tool calls, which this server does not run"),
    ):
        if body.get(name) is not None:
            raise invalid(f"{name} is not offered: {why}", name)
    if body.get("truncation") not in (None, "disabled"):
        raise invalid(
            'truncation must be "disabled": this server never drops input to fit the context; '
            "a request too long for it is a 400",
            "truncation",
        )
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise invalid(f"metadata must map at most {MAX_METADATA} string keys to strings", "metadata")
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise invalid(f"{name} must be a string", name)


def _instructions(body: dict[str, Any]) -> str | None:
    value = body.get("instructions")
    if value is not None and not isinstance(value, str):
        raise invalid("instructions must be a string", "instructions")
    return value or None


def _include(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("include must be a list of strings", "include")
    for name in value:
        if name not in INCLUDES:
            raise invalid(f"include: {name!r} is not offered; this server includes {LOGPROBS_INCLUDE!r}", "include")
    return value


def _text_format(text: Any) -> dict[str, Any] | None:
    """text.format as chat's response_format (None: plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid('text must be an object such as {"format": {"type": "text"}}', "text")
    if text.get("verbosity") not in (None, "medium"):
        raise invalid(
            'text.verbosity: this server does not steer verbosity; leave it out or give "medium"', "text.verbosity"
        )
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise invalid('text.format must be an object such as {"type": "json_object"}', "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise invalid("text.format.schema must be a JSON schema object", "text.format.schema")
        if not isinstance(fmt.get("name"), str):
            raise invalid("text.format.name must be a string", "text.format.name")
        return {"type": "json_schema", "json_schema": {"name": fmt["name"], "schema": fmt["schema"]}}
    raise invalid(f'text.format.type must be "text", "json_object" or "json_schema"; got {kind!r}', "text.format.type")


def _tools(value: Any) -> list[dict[str, Any]]:
    """Function tools in chat's shape; a built-in tool (web_search, file_search, ...) is a 400 naming it."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid('tools must be a list of {"type": "function", "name": ...} objects', "tools")
    out = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise invalid(f'tools[{i}] must be an object {{"type": "function", "name": ...}}', f"tools[{i}]")
        if tool.get("type") != "function":
            raise invalid(
                f"tools[{i}].type {tool.get('type')!r} is not offered: this server runs function tools "
                "only (built-in tools such as web_search run on OpenAI's servers)",
                f"tools[{i}].type",
            )
        if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
            raise invalid(f"tools[{i}].strict must be true or false", f"tools[{i}].strict")
        # strict or not, arguments are constrained to the schema: a base model has no other way to comply.
        function = {k: tool.get(k) for k in ("name", "description", "parameters")}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        return {"type": "function", "function": {"name": value.get("name")}}
    raise invalid('tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...}', "tool_choice")


# --- the echo, and chat's errors in Responses' terms ----------------------------------------------------


def _echo(body: dict[str, Any], chat: ChatRequest, include: list[str]) -> dict[str, Any]:
    """The request's parameters as OpenAI's response object repeats them."""
    sampling = chat.sampling
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    given = body.get("tools") or []
    tools = [
        {
            "type": "function",
            "name": t["function"]["name"],
            "description": t["function"].get("description"),
            "parameters": t["function"].get("parameters"),
            "strict": given[i].get("strict", True),  # as OpenAI's default; arguments are constrained either way
        }
        for i, t in enumerate(chat.tools.definitions if chat.tools else [])
    ]
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": sampling.max_tokens,
        "max_tool_calls": None,
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": chat.tools.parallel if chat.tools else body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier") or "default",
        "store": body.get("store", True),
        "temperature": sampling.setting("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice") or ("auto" if tools else "none"),
        "tools": tools,
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": sampling.setting("top_p"),
        "truncation": "disabled",
        "user": body.get("user"),
    } | ({"include": include} if include else {})


_RENAMES = [
    (re.compile(r"tools\[(\d+)\]\.function\."), r"tools[\1]."),
    (re.compile(r"messages\[\d+\]\S*"), "input"),
    (re.compile(r"\bresponse_format\b"), "text.format"),
    (re.compile(r"\bmax_tokens\b"), "max_output_tokens"),
    (re.compile(r"tool_choice names function"), "tool_choice names"),
]


def in_responses_terms(error: APIError) -> APIError:
    """A 400 from parse_chat, naming the Responses field instead of its chat counterpart."""
    message, param = error.message, error.param
    for pattern, replacement in _RENAMES:
        message = pattern.sub(replacement, message)
        param = pattern.sub(replacement, param) if param else param
    return APIError(error.status, message, type=error.type, param=param, code=error.code, headers=error.headers)
