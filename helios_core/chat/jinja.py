"""Jinja chat templates rendered as transformers renders them: the same sandbox, filters and variables.

`JinjaTemplate.compile(source)` compiles once (cached) and probes what the template reads: tools,
tool calls, arguments as a mapping, system messages.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from helios_core.errors import ChatTemplateError


@dataclass(frozen=True)
class JinjaTemplate:
    """One compiled template and what it reads."""

    source: str
    compiled: jinja2.Template
    reads_tools: bool  # uses the `tools` variable
    reads_tool_calls: bool  # shows an assistant's tool_calls
    object_arguments: bool = False  # reads a tool call's arguments as a mapping, not as JSON text
    system_role: bool = True  # shows a system message (some, such as Gemma 2's, raise on one)

    @staticmethod
    def compile(source: str) -> JinjaTemplate:
        return _compile(source)

    def render(self, variables: dict[str, Any]) -> str:
        try:
            return self.compiled.render(variables)
        except _TemplateRaised as e:
            raise RaisedByTemplate(e.message) from None
        except Exception as e:  # a template is code: any failure in it is the template's, not ours
            kind = "" if isinstance(e, jinja2.TemplateError) else f"{type(e).__name__}: "
            raise ChatTemplateError(f"the chat template failed{_template_line(e)}: {kind}{e}") from None


class _TemplateRaised(jinja2.TemplateError):
    """raise_exception(message) called by the template: its message is the whole error."""


class RaisedByTemplate(ChatTemplateError):
    """The ChatTemplateError for raise_exception: the template's verdict on the messages, not a failure of it."""


class _GenerationBlocks(jinja2.ext.Extension):
    """transformers' {% generation %} ... {% endgeneration %} marks assistant text for training
    masks; for a prompt the mark means nothing, so the block renders as plain text."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str):
    raise _TemplateRaised(str(message))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; prompts need the JSON itself.
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    # What filters such as map() and selectattr() yield: lazy sequences, which JSON shows as arrays.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, jinja2.Undefined)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _from_json(text: str) -> Any:
    # llama.cpp's Jinja engine has it, and some templates (DeepSeek's) decode arguments with it.
    return json.loads(text)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # Immutable sandbox: templates come from model files, so they may not reach Python internals
    # (attributes starting with _) nor mutate the messages they are given.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationBlocks]
    )
    env.filters["tojson"] = _tojson
    env.filters["from_json"] = _from_json
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile(source: str) -> JinjaTemplate:
    env = _environment()
    try:
        tree = env.parse(source)
        compiled = env.from_string(tree)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not parse: line {e.lineno}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template does not parse: {e}") from None
    template = JinjaTemplate(
        source=source,
        compiled=compiled,
        reads_tools="tools" in jinja2.meta.find_undeclared_variables(tree),
        reads_tool_calls="tool_calls" in source,  # read as an attribute or key, which jinja2.meta cannot list
    )
    if template.reads_tool_calls and _reads_arguments_as_mapping(template):
        template = dataclasses.replace(template, object_arguments=True)
    if not template.reads_tools and not _shows_system_messages(template):
        template = dataclasses.replace(template, system_role=False)
    return template


def _shows_system_messages(template: JinjaTemplate) -> bool:
    """Whether a system message renders (asked of templates that may get tools described in one)."""
    messages = [{"role": "system", "content": "probe system"}, {"role": "user", "content": "probe user"}]
    try:
        text = template.render({"messages": messages, "add_generation_prompt": True, "bos_token": "", "eos_token": ""})
    except ChatTemplateError:
        return False
    return "probe system" in text


def _reads_arguments_as_mapping(template: JinjaTemplate) -> bool:
    """Whether a template shows a tool call whose arguments are an object, and not by printing its Python repr.

    OpenAI clients send arguments as JSON text; templates written for transformers mostly expect the
    object (`arguments|tojson`, `arguments.items()`), and a few print the text as it is. One probe
    render with an object tells which, once per template (as llama.cpp probes its templates' caps).
    """
    function = {"name": "probe_tool", "arguments": {"probe_arg": "probe_value"}}
    call = {"id": "probe0001", "type": "function", "function": function}  # ids of 9 letters/digits, as Mistral wants
    messages = [
        {"role": "user", "content": "probe question"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "probe0001", "name": "probe_tool", "content": "probe result"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "probe_tool",
                "description": "probe",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    try:
        text = template.render(
            {"messages": messages, "tools": tools, "add_generation_prompt": True, "bos_token": "", "eos_token": ""}
        )
    except ChatTemplateError:
        return False
    return "probe_value" in text and "{'probe_arg'" not in text


def _template_line(error: BaseException) -> str:
    """' at line N' of the template where a render failed, from the traceback jinja2 rewrites."""
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == "<template>"]
    return f" at line {lines[-1]}" if lines else ""
