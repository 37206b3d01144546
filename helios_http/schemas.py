"""Request bodies of the OpenAI API, validated into plain values.

Every field we honour is checked here, and a bad one becomes a 400 naming
it in `param`. Fields we do not use are ignored, as OpenAI clients expect
(they send `user`, `metadata`, `store`, ... freely).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from helios_core import constraint
from helios_core.constraint import Constraint
from helios_core.errors import ConstraintError
from helios_core.generate import GenerationParams
from helios_core.reasoning import ReasoningPlan
from helios_core.sampling.params import SETTINGS, SETTINGS_BY_NAME, SettingError
from helios_core.sequence import LOGPROBS_MODES
from helios_http import media, plugins, reasoning_fields, tools
from helios_http.errors import invalid

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_N = 16
MAX_STOPS = 16
# Generations one request may ask for (prompts x n). Each takes a queue place and then
# a slot, so a bound well under the default queue (64) keeps one request from
# filling it; 16 is also the most one prompt may ask for through n.
MAX_GENERATIONS = 16


@dataclass
class SamplingFields:
    # The table's settings (helios_core.sampling.params) the request gave, by GenerationParams' names.
    settings: dict[str, Any]
    max_tokens: int | None
    stop: list[str]
    logit_bias: dict[int, float]
    logprobs: bool
    top_logprobs: int
    prompt_logprobs: int | None = None  # completions' echo with logprobs: score the prompt too
    constraint: Constraint | None = None  # response_format, json_schema or grammar
    constraint_param: str | None = None  # ... and the field that asked for it, for errors
    # llama-server's further fields that are no setting of the table (lists, modes, switches), as given.
    options: dict[str, Any] = field(default_factory=dict)
    plugins: plugins.PluginRequest | None = None  # sampler / processors by name (plugins.py)
    lora: dict[int, float] | None = None  # llama-server's per-request adapter scales by id (lora_api.py)
    model: str | None = None  # the request's model name: "BASE:ADAPTER" picks an adapter (lora_api.py)
    # Most tokens of reasoning before the engine ends the section (-1: no limit, 0: none); None: the server's.
    reasoning_budget: int | None = None
    reasoning: ReasoningPlan | None = None  # set once the prompt is rendered (chat only): how to read the output

    def setting(self, name: str) -> Any:
        """A table setting as this request has it: given, or the default."""
        return self.settings.get(name, SETTINGS_BY_NAME[name].default)

    def params(
        self, n_vocab: int, seed_offset: int = 0, plugins: tuple = (None, ()), lora: tuple = ()
    ) -> GenerationParams:
        """One generation's settings; plugins: the (sampler, processors) made for it by plug-in factories;
        lora: the (adapter, scale) pairs it runs under (lora_api.request_set)."""
        for token in self.logit_bias:
            if not 0 <= token < n_vocab:
                raise invalid(f"logit_bias names token {token}, outside the vocabulary [0, {n_vocab})", "logit_bias")
        if any(not 0 <= t < n_vocab for t in self.options.get("stop_token_ids", ())):
            raise invalid(f"stop_token_ids must lie in [0, {n_vocab})", "stop_token_ids")
        settings = dict(self.settings)
        if settings.get("seed") is not None:
            settings["seed"] += seed_offset
        return GenerationParams(
            **settings,
            **self.options,
            max_tokens=self.max_tokens,
            stop=self.stop,
            logit_bias=self.logit_bias or None,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            prompt_logprobs=self.prompt_logprobs,
            constraint=self.constraint,
            sampler=plugins[0],
            processors=plugins[1],
            lora=lora,
            reasoning=self.reasoning,
            reasoning_budget=self.reasoning_budget,
        )


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
    top = _integer(body, "top_logprobs", 0, low=0, high=20)
    if top and not logprobs:
        raise invalid("top_logprobs needs logprobs set to true", "top_logprobs")
    stream, include_usage = _stream(body)
    offered = tools.parse_tools(body, parallel=boolean_field(body, "parallel_tool_calls", True))
    return ChatRequest(
        parsed,
        _sampling(body, logprobs, top),
        _integer(body, "n", 1, low=1, high=MAX_N),
        stream,
        include_usage,
        tools=offered,
        template_kwargs=reasoning_fields.template_kwargs(body),
        reasoning_effort=reasoning_fields.effort(body),
        media=refs,
    )


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    prompts = _prompts(body.get("prompt"))
    n = _integer(body, "n", 1, low=1, high=MAX_N)
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
        top = _integer(body, "logprobs", 0, low=0, high=5)
        logprobs = True
    echo = boolean_field(body, "echo", False)
    # max_tokens 0 with echo scores the prompt without generating, as OpenAI's legacy API allows.
    if not echo and 0 in (body.get("max_tokens"), body.get("max_completion_tokens")):
        raise invalid("max_tokens must be >= 1; 0 is allowed with echo: true, to score the prompt", "max_tokens")
    sampling = _sampling(body, logprobs, top, min_tokens=0 if echo else 1)
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
        if all(_is_token_id(t) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and p and all(_is_token_id(t) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise invalid("prompt must be a string, a list of strings, or token ids", "prompt")


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no token id


def _sampling(body: dict[str, Any], logprobs: bool, top_logprobs: int, min_tokens: int = 1) -> SamplingFields:
    # max_completion_tokens replaces max_tokens; a null one is absent, not "no limit".
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, name, None, low=min_tokens)
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOPS:
        stops = list(stop)
    else:
        raise invalid(f"stop must be a string or a list of at most {MAX_STOPS} strings", "stop")
    constraint, constraint_param = _constraint(body)
    return SamplingFields(
        settings=_settings(body),
        options=_options(body),
        plugins=plugins.requested(body),
        constraint=constraint,
        constraint_param=constraint_param,
        max_tokens=max_tokens,
        stop=[s for s in stops if s],
        logit_bias=_logit_bias(body.get("logit_bias")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        lora=None if body.get("lora") is None else lora_scales(body["lora"], "lora"),
        reasoning_budget=_integer(body, reasoning_fields.budget_name(body), None, low=-1),
        model=body["model"] if isinstance(body.get("model"), str) else None,
    )


def lora_scales(raw: Any, param: str | None) -> dict[int, float]:
    """llama-server's adapter list, [{"id": 0, "scale": 0.5}, ...], as {id: scale} (ids checked by lora_api).

    param: the field holding it, or None for a whole body (POST /lora-adapters)."""
    where = param or "body"
    shape = f'{param or "the request body"} must be a list of {{"id": integer, "scale": number}} objects'
    if not isinstance(raw, list):
        raise invalid(shape, param)
    scales: dict[int, float] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise invalid(shape, param)
        adapter_id = entry.get("id")
        if not _is_token_id(adapter_id) or adapter_id < 0:  # an integer, not a bool
            raise invalid(f"{where}[{i}].id must be an adapter's id, an integer (GET /lora-adapters lists them)", param)
        scale = entry.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
            raise invalid(f"{where}[{i}].scale must be a number", param)
        if adapter_id in scales:
            raise invalid(f"{where}[{i}]: adapter {adapter_id} is listed twice", param)
        scales[adapter_id] = float(scale)
    return scales


def _settings(body: dict[str, Any]) -> dict[str, Any]:
    """The table's settings the body gives (by any of their request names), each checked against its bounds."""
    given: dict[str, Any] = {}
    for row in SETTINGS:
        name = next((n for n in row.request if body.get(n) is not None), None)
        if name is None:
            continue
        value = _integer(body, name, None) if row.kind is int else _number(body, name, 0.0, low=None, high=None)
        try:
            row.check(value, called=name)
        except SettingError as error:
            raise invalid(str(error), name) from None
        given[row.name] = value
    return given


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """llama-server's and vLLM's fields beyond the table (lists, modes, switches), checked so a bad one is a 400."""
    options: dict[str, Any] = {}
    breakers = body.get("dry_sequence_breakers")
    if breakers is not None:
        if not isinstance(breakers, list) or not all(isinstance(b, str) and b for b in breakers) or len(breakers) > 64:
            raise invalid(
                "dry_sequence_breakers must be a list of at most 64 non-empty strings", "dry_sequence_breakers"
            )
        options["dry_sequence_breakers"] = tuple(breakers)
    mode = body.get("logprobs_mode")
    if mode is not None:
        if mode not in LOGPROBS_MODES:
            raise invalid(f"logprobs_mode must be one of {', '.join(LOGPROBS_MODES)}; got {mode!r}", "logprobs_mode")
        options["logprobs_mode"] = mode
    if body.get("ignore_eos") is not None:
        options["ignore_eos"] = boolean_field(body, "ignore_eos", False)
    if body.get("speculative") is not None:  # false: no speculative decoding for this request
        options["speculative"] = boolean_field(body, "speculative", True)
    stop_ids = body.get("stop_token_ids")
    if stop_ids is not None:
        if not isinstance(stop_ids, list) or not all(_is_token_id(t) for t in stop_ids) or len(stop_ids) > 64:
            raise invalid("stop_token_ids must be a list of at most 64 token ids", "stop_token_ids")
        options["stop_token_ids"] = tuple(stop_ids)
    return options


def _constraint(body: dict[str, Any]) -> tuple[Constraint | None, str | None]:
    """What the output must match: OpenAI's response_format, or llama-server's json_schema or grammar.

    The constraint is checked here (a schema llguidance refuses is a 400 quoting it); what it
    says about the vocabulary is checked against the model before the request is queued.
    """
    given = [name for name in ("response_format", "json_schema", "grammar") if body.get(name) is not None]
    if len(given) > 1:
        raise invalid(f"give one of {', '.join(given)}: each constrains the whole output", given[1])
    if not given:
        return None, None
    name = given[0]
    value = body[name]
    try:
        if name == "grammar":
            if not isinstance(value, str) or not value.strip():
                raise invalid("grammar must be a non-empty Lark or GBNF grammar", name)
            return constraint.grammar(value), name
        if name == "json_schema":
            if not isinstance(value, dict | bool):
                raise invalid("json_schema must be a JSON schema object", name)
            return constraint.json_schema(value), name
        return _response_format(value), name
    except ConstraintError as error:
        raise invalid(f"{name}: {error}", name) from None


def _response_format(value: Any) -> Constraint | None:
    if not isinstance(value, dict):
        raise invalid('response_format must be an object such as {"type": "json_object"}', "response_format")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        # llama-server also takes a schema here.
        schema = value.get("schema")
        return constraint.json_object() if schema is None else constraint.json_schema(schema)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid(
                'response_format.json_schema must be an object with "name" and "schema"', "response_format.json_schema"
            )
        schema = spec.get("schema")
        return constraint.json_object() if schema is None else constraint.json_schema(schema)
    raise invalid(
        f'response_format.type must be "text", "json_object" or "json_schema"; got {kind!r}', "response_format.type"
    )


def _logit_bias(raw: Any) -> dict[int, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid("logit_bias must map token ids to numbers in [-100, 100]", "logit_bias")
    bias = {}
    for key, value in raw.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise invalid(f"logit_bias key {key!r} is not a token id", "logit_bias") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise invalid(f"logit_bias[{key}] must be a number in [-100, 100]", "logit_bias")
        bias[token] = float(value)
    return bias


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


def boolean_field(body: dict[str, Any], name: str, default: bool) -> bool:
    """A true/false field of a request body; absent or null means `default`, anything else is a 400."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false", name)
    return value


def _integer(body: dict[str, Any], name: str, default, *, low: int | None = None, high: int | None = None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise invalid(f"{name} must be an integer", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(f"{name} must be {_bounds(low, high)}; got {value}", name)
    return value


def _number(body: dict[str, Any], name: str, default: float, *, low: float | None, high: float | None) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{name} must be a number", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(f"{name} must be {_bounds(low, high)}; got {value}", name)
    return float(value)


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"
