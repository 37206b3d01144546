"""Request bodies of the OpenAI API, validated into plain values.

Every field we honour is checked here, and a bad one becomes a 400 naming
it in `param`. Fields we do not use are ignored, as OpenAI clients expect
(they send `user`, `metadata`, `store`, ... freely).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from helios_http import media, reasoning_fields, tools
from helios_http.errors import invalid
from helios_http.fields import boolean_field, integer, is_token_id
from helios_http.sampling_fields import SamplingFields, sampling_fields

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_N = 16
# Generations one request may ask for (prompts x n). Each takes a queue place and then
# a slot, so a bound well under the default queue (64) keeps one request from
# filling it; 16 is also the most one prompt may ask for through n.
MAX_GENERATIONS = 16


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]  # role and content; an assistant's tool_calls, a tool's tool_call_id; name
    sampling: SamplingFields
    n: int
    stream: bool
    include_usage: bool
    tools: tools.ToolsRequest | None = None
    tool_plan: tools.ToolPlan | None = None  # set once the chat template is known (tools.plan)
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # chat_template_kwargs: variables for the template
    reasoning_effort: str | None = None  # none, minimal, low, medium, high: the template's switch where it has one
    media: list[media.MediaRef] = field(default_factory=list)  # image and audio parts, media.SENTINEL in the text
    # The final (assistant) message is left open and continued, not answered: a prefill. vLLM's field name.
    continue_final_message: bool = False


@dataclass
class CompletionRequest:
    prompts: list[str | list[int]]
    sampling: SamplingFields
    n: int
    stream: bool
    include_usage: bool
    echo: bool = False  # the text (and logprobs) of each choice start with its prompt's


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list of {role, content} objects", "messages")
    refs: list[media.MediaRef] = []
    parsed = [_message(m, i, refs) for i, m in enumerate(messages)]
    if boolean_field(body, "echo", False):
        raise invalid("echo is a field of /v1/completions; chat completions never repeat the prompt", "echo")
    logprobs = boolean_field(body, "logprobs", False)
    top = integer(body, "top_logprobs", 0, low=0, high=20)
    if top and not logprobs:
        raise invalid("top_logprobs needs logprobs set to true", "top_logprobs")
    stream, include_usage = _stream(body)
    offered = tools.parse_tools(body, parallel=boolean_field(body, "parallel_tool_calls", True))
    continued = boolean_field(body, "continue_final_message", False)
    if continued and (parsed[-1]["role"] != "assistant" or not parsed[-1]["content"].strip()):
        raise invalid(
            "continue_final_message needs the last message to be an assistant message with text to continue",
            "continue_final_message",
        )
    return ChatRequest(
        parsed,
        sampling_fields(body, logprobs, top),
        integer(body, "n", 1, low=1, high=MAX_N),
        stream,
        include_usage,
        tools=offered,
        template_kwargs=reasoning_fields.template_kwargs(body),
        reasoning_effort=reasoning_fields.effort(body),
        media=refs,
        continue_final_message=continued,
    )


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    prompts = _prompts(body.get("prompt"))
    n = integer(body, "n", 1, low=1, high=MAX_N)
    if len(prompts) > MAX_GENERATIONS:
        raise invalid(f"prompt holds {len(prompts)} prompts; one request takes at most {MAX_GENERATIONS}", "prompt")
    if len(prompts) * n > MAX_GENERATIONS:
        raise invalid(
            f"{len(prompts)} prompts x n={n} asks for {len(prompts) * n} generations; one request takes at most "
            f"{MAX_GENERATIONS}",
            "n",
        )
    # Legacy completions: logprobs is an integer, the number of alternatives (0..5).
    raw = body.get("logprobs")
    if raw is None or raw is False:
        logprobs, top = False, 0
    else:
        top = integer(body, "logprobs", 0, low=0, high=5)
        logprobs = True
    echo = boolean_field(body, "echo", False)
    # max_tokens 0 with echo scores the prompt without generating, as OpenAI's legacy API allows.
    if not echo and 0 in (body.get("max_tokens"), body.get("max_completion_tokens")):
        raise invalid("max_tokens must be >= 1; 0 is allowed with echo: true, to score the prompt", "max_tokens")
    sampling = sampling_fields(body, logprobs, top, min_tokens=0 if echo else 1)
    if echo and logprobs:
        sampling.prompt_logprobs = top
    stream, include_usage = _stream(body)
    return CompletionRequest(prompts, sampling, n, stream, include_usage, echo)


# --- fields -----------------------------------------------------------------------


def _message(message: Any, index: int, refs: list[media.MediaRef]) -> dict[str, Any]:
    """One message as the chat template gets it: text content, and the tool fields as given (checked)."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid(f"{where} must be an object with role and content", where)
    role = message.get("role")
    if role not in ROLES:
        raise invalid(f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}", f"{where}.role")
    content = _text(message, where, refs)
    plain: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": content}
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise invalid(f"{where}.name must be a string", f"{where}.name")
        plain["name"] = name
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            raise invalid(f"{where}.tool_calls: only assistant messages carry tool calls", f"{where}.tool_calls")
        if not isinstance(calls, list):
            raise invalid(f"{where}.tool_calls must be a list of calls", f"{where}.tool_calls")
        if calls:
            plain["tool_calls"] = [_tool_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(calls)]
    plain.update(reasoning_fields.message_reasoning(message, role, where))
    call_id = message.get("tool_call_id")
    if call_id is not None:
        if not isinstance(call_id, str):
            raise invalid(f"{where}.tool_call_id must be a string", f"{where}.tool_call_id")
        plain["tool_call_id"] = call_id
    return plain


def _text(message: dict[str, Any], where: str, refs: list[media.MediaRef]) -> str:
    content = message.get("content")
    if content is None:
        text = ""  # an assistant's message with tool calls only, or an empty one
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            ref = media.chat_part(part, f"{where}.content[{j}]") if isinstance(part, dict) else None
            if ref is not None:  # an image or audio part: its bytes are loaded once the server's limits apply
                refs.append(ref)
                parts.append(media.SENTINEL)
                continue
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(
                    f'{where}.content[{j}] must be a text part {{"type": "text", "text": ...}}; '
                    "this server reads text only",
                    f"{where}.content",
                )
            parts.append(part["text"])
        text = "\n".join(parts)
    else:
        raise invalid(f"{where}.content must be a string or a list of text parts", f"{where}.content")
    if "\0" in text:
        # Chat templates are applied by llama.cpp to C strings: the text after a NUL would vanish.
        raise invalid(
            f"{where}.content contains a NUL character (U+0000), which a chat prompt cannot carry", f"{where}.content"
        )
    return text


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    """An assistant's earlier call: {id, type: "function", function: {name, arguments: JSON text}}."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid(f'{where} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}', where)
    arguments = function.get("arguments", "{}")
    if not isinstance(arguments, str | dict):  # OpenAI's JSON text; some clients send the object
        raise invalid(f"{where}.function.arguments must be a JSON string", f"{where}.function.arguments")
    if call.get("type", "function") != "function":
        raise invalid(f'{where}.type must be "function"', f"{where}.type")
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise invalid(f"{where}.id must be a string", f"{where}.id")
    checked = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    return {"id": call_id, **checked} if call_id is not None else checked


def _prompts(prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(is_token_id(t) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and p and all(is_token_id(t) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise invalid("prompt must be a string, a list of strings, or token ids", "prompt")


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = boolean_field(body, "stream", False)
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise invalid("stream_options must be an object", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid("stream_options.include_usage must be true or false", "stream_options.include_usage")
    return stream, include and stream
