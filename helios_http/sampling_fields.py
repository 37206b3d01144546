"""The sampling fields every API family shares: parsed once from a request body into SamplingFields.

The chain's settings come from the one table (helios_core.sampling.params); the rest (limits,
stop strings, logit_bias, constraints, llama-server's list-valued fields) is read here. Each API
family maps its own names onto these before parsing, so none has a copy of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from helios_core import constraint
from helios_core.constraint import Constraint
from helios_core.errors import ConstraintError
from helios_core.generate import GenerationParams
from helios_core.reasoning import ReasoningPlan
from helios_core.sampling.params import SETTINGS, SETTINGS_BY_NAME, SettingError
from helios_core.sequence import LOGPROBS_MODES
from helios_http import plugins, reasoning_fields
from helios_http.errors import invalid
from helios_http.fields import boolean_field, integer, is_token_id, number

MAX_STOPS = 16


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


def sampling_fields(body: dict[str, Any], logprobs: bool, top_logprobs: int, min_tokens: int = 1) -> SamplingFields:
    # max_completion_tokens replaces max_tokens; a null one is absent, not "no limit".
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = integer(body, name, None, low=min_tokens)
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
        reasoning_budget=integer(body, reasoning_fields.budget_name(body), None, low=-1),
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
        if not is_token_id(adapter_id) or adapter_id < 0:  # an integer, not a bool
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
        value = integer(body, name, None) if row.kind is int else number(body, name, 0.0, low=None, high=None)
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
        if not isinstance(stop_ids, list) or not all(is_token_id(t) for t in stop_ids) or len(stop_ids) > 64:
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
