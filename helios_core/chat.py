"""Chat templates: turn a list of messages into the prompt text a model was trained on.

A `ChatTemplate` renders in one of two ways:

- Jinja: the model's own template (GGUF `tokenizer.chat_template`, or a
  named variant such as `tokenizer.chat_template.tool_use`), or a template
  file, rendered with jinja2 in a sandbox as transformers' apply_chat_template
  renders it: the same environment options, filters and variables, so a
  template behaves here as its authors tested it.
- Built-in: llama.cpp's llama_chat_apply_template, which knows a fixed set of
  formats by name ("gemma", "chatml", ...). Models whose GGUF carries no
  template (the default Gemma) use their architecture's built-in one.

`load(model, template)` picks: a template the caller names (a built-in
name, one of the model's variants, or Jinja text), else the model's own,
else its architecture's built-in. Never a hard-coded format.

Tools. A Jinja template that reads `tools` gets them as given; when tools
are given and the model has a `tool_use` variant, that variant renders
(unless it fails on OpenAI's tool shape: Command-R's expects Cohere's own;
then the default one does).
Messages keep their `tool_calls`, `tool_call_id` and `name`; a call's
arguments (JSON text from OpenAI clients) become the object they encode for
templates that read them as one, which a probe render finds out once per
template, as llama.cpp does. A template that cannot show tools or tool calls
(every built-in, and a Jinja template that never mentions `tools` /
`tool_calls`) gets them in the generic JSON form instead: the tools described
in a system message (in the first user message for templates that refuse
system messages, as Gemma 2's does), an assistant's calls as
`{"tool_calls": [{"name", "arguments", "id"}]}` text, and a tool result as a
user message `{"tool_response": {"tool_call_id", "name", "content"}}`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from helios_core import _llama
from helios_core.errors import ChatTemplateError
from helios_core.model import Model

logger = logging.getLogger("helios.chat")

Message = Mapping[str, Any]  # {"role", "content", and for tools "tool_calls" / "tool_call_id" / "name"}

# Architectures whose GGUFs often carry no template, mapped to llama.cpp's
# built-in template for them (names from llama_chat_builtin_templates).
_BUILTIN_BY_ARCHITECTURE = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "llama": "llama3",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "phi3": "phi3",
}

# The variant transformers and llama.cpp switch to when a request offers tools.
TOOL_USE_VARIANT = "tool_use"

TOOLS_PREAMBLE = (
    "You can call the tools below. To call tools, answer with only a JSON object of the form "
    '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}.\n\nTools:\n'
)


class ChatTemplate:
    """How one model's messages become prompt text. Build with `load()`, or `jinja()` / `builtin()`.

    Compiling happens once, here; `render` is safe to call from many threads.
    """

    def __init__(
        self,
        *,
        builtin: str | None = None,
        default: _Jinja | None = None,
        tool_use: _Jinja | None = None,
        bos_token: str = "",
        eos_token: str = "",
        tokenizer_adds_bos: bool = False,
    ):
        self._builtin = builtin
        self._default = default
        self._tool_use = tool_use
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._tokenizer_adds_bos = tokenizer_adds_bos

    @classmethod
    def jinja(
        cls,
        source: str,
        *,
        tool_use: str | None = None,
        bos_token: str = "",
        eos_token: str = "",
        tokenizer_adds_bos: bool = False,
    ) -> ChatTemplate:
        """A Jinja template (and optionally its tool_use variant). Raises ChatTemplateError if one does not parse.

        bos_token, eos_token: the model's token text, as the template's variables.
        tokenizer_adds_bos: the prompt will be tokenized with add_special=True by a vocabulary that
        adds BOS, so a BOS the template writes first is dropped (else the prompt would start with two).
        """
        return cls(
            default=_Jinja.compile(source),
            tool_use=_Jinja.compile(tool_use) if tool_use else None,
            bos_token=bos_token,
            eos_token=eos_token,
            tokenizer_adds_bos=tokenizer_adds_bos,
        )

    @classmethod
    def builtin(cls, name: str) -> ChatTemplate:
        """llama.cpp's template `name`, or a template text it recognises. Raises ChatTemplateError if unknown."""
        apply_template(name, [{"role": "user", "content": "hi"}])  # llama.cpp says here whether it knows it
        return cls(builtin=name)

    @property
    def source(self) -> str | None:
        """The Jinja text of the default template; None when llama.cpp renders a built-in one."""
        return self._default.source if self._default else None

    @property
    def builtin_name(self) -> str | None:
        """The llama.cpp built-in template rendering these chats, or None for Jinja."""
        return self._builtin

    @property
    def supports_tools(self) -> bool:
        """Whether the template shows `tools` itself; if not, render() describes them in a system message."""
        return any(t is not None and t.reads_tools for t in (self._default, self._tool_use))

    def render(
        self,
        messages: Iterable[Message],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text for `messages`, to tokenize with add_special=True and parse_special=True.

        messages: OpenAI chat messages. An assistant's `tool_calls` and a tool message's `tool_call_id`
        and `name` reach a Jinja template as given, but for two things: a null content reaches it as ""
        (Jinja would print None as the text "None"), and a call's arguments, JSON text in OpenAI's API,
        reach a template that reads them as a mapping (most do) as the object the text encodes.
        tools: OpenAI tool definitions ({"type": "function", "function": {...}}), or None.
        add_generation_prompt: end with the tokens that open the assistant's turn.
        variables: further template variables (e.g. enable_thinking); a Jinja template's only.
        Raises ChatTemplateError with the template's own message when it raises or fails.
        """
        messages = [_plain(m, i) for i, m in enumerate(messages)]
        tools = list(tools) if tools else None
        if self._default is None:
            return self._render_builtin(messages, tools, add_generation_prompt)
        if tools and self._tool_use:
            try:
                return self._render_jinja(self._tool_use, messages, tools, add_generation_prompt, variables)
            except _RaisedByTemplate:
                raise
            except ChatTemplateError as e:
                # Some tool_use variants predate OpenAI's tool shape (Command-R's reads Cohere's own):
                # the default template, with the tools in the generic form, still serves the request.
                logger.debug("the tool_use template failed (%s); rendering with the default one", e)
        return self._render_jinja(self._default, messages, tools, add_generation_prompt, variables)

    def _render_jinja(
        self,
        template: _Jinja,
        messages: list[dict[str, Any]],
        tools,
        add_generation_prompt: bool,
        variables: Mapping[str, Any] | None,
    ) -> str:
        if tools and not template.reads_tools:
            messages = _with_tools_described(messages, tools, system_role=template.system_role)
        if not template.reads_tool_calls:
            messages = _generic_tool_messages(messages)
        elif template.object_arguments:
            messages = [_with_object_arguments(m) for m in messages]
        text = template.render(
            {
                **(variables or {}),
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": add_generation_prompt,
                "bos_token": self._bos_token,
                "eos_token": self._eos_token,
            }
        )
        if self._tokenizer_adds_bos and self._bos_token and text.startswith(self._bos_token):
            text = text[len(self._bos_token) :]
        return text

    def _render_builtin(self, messages: list[dict[str, Any]], tools, add_generation_prompt: bool) -> str:
        if tools:
            messages = _with_tools_described(messages, tools)
        return apply_template(self._builtin, _generic_tool_messages(messages), add_assistant=add_generation_prompt)

    def __repr__(self) -> str:
        if self._builtin is not None:
            return f"ChatTemplate(builtin={self._builtin!r})"
        variants = ", tool_use" if self._tool_use else ""
        return f"ChatTemplate(jinja, {len(self._default.source)} chars{variants})"


def load(model: Model, template: str | None = None) -> ChatTemplate:
    """The chat template for a model.

    template: a llama.cpp built-in name ("chatml"), one of the model's named templates ("tool_use"),
    or Jinja text; None: the model's own template, else its architecture's built-in one.
    Raises ChatTemplateError when none applies or a template does not parse.
    """
    tokens = _token_variables(model)
    if template:
        if template in builtin_templates():
            return ChatTemplate.builtin(template)
        variant = model.chat_template(template) if _is_name(template) else None
        if variant:
            return ChatTemplate.jinja(variant, **tokens)
        if _is_name(template):
            raise ChatTemplateError(
                f"unknown chat template {template!r}: not one of llama.cpp's built-in names "
                f"({', '.join(builtin_templates())}){_variants_hint(model)}"
            )
        return ChatTemplate.jinja(template, **tokens)
    own = model.chat_template()
    if own:
        return _model_template(model, own, tokens)
    builtin = _BUILTIN_BY_ARCHITECTURE.get(model.architecture)
    if builtin:
        return ChatTemplate.builtin(builtin)
    raise ChatTemplateError(
        f"{model.path.name} carries no chat template and llama.cpp has no built-in one for "
        f"architecture {model.architecture!r}; name one of: {', '.join(builtin_templates())}"
    )


def read_template_file(path: str | Path) -> str:
    """The text of a Jinja chat template file, checked to parse. Raises ChatTemplateError in one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ChatTemplateError(f"cannot read chat template file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ChatTemplateError(f"chat template file {path} is not UTF-8 text") from None
    if _is_name(text):
        raise ChatTemplateError(f"chat template file {path} holds no Jinja markup ({{{{ }}}} or {{% %}})")
    try:
        _Jinja.compile(text)
    except ChatTemplateError as e:
        raise ChatTemplateError(f"chat template file {path}: {e}") from None
    return text


# --- llama.cpp's built-in templates ----------------------------------------------------


def builtin_templates() -> list[str]:
    """Names of the templates llama.cpp implements, e.g. 'chatml', 'gemma', 'llama3'."""
    n = _llama.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * n)()
    _llama.llama_chat_builtin_templates(names, n)
    return [name.decode() for name in names]


def template_for(model: Model, name: str | None = None) -> str:
    """The template text or built-in name for llama.cpp: `name` if given, else the model's own, else its
    architecture's. (`load` is the Jinja-aware successor; this stays for llama.cpp's path.)"""
    if name:
        return name
    own = model.chat_template()
    if own:
        return own
    builtin = _BUILTIN_BY_ARCHITECTURE.get(model.architecture)
    if builtin:
        return builtin
    raise ChatTemplateError(
        f"{model.path.name} carries no chat template and llama.cpp has no built-in one for "
        f"architecture {model.architecture!r}; name one of: {', '.join(builtin_templates())}"
    )


def apply_template(template: str, messages: Iterable[Mapping[str, str]], *, add_assistant: bool = True) -> str:
    """Render messages ({"role", "content"}) with llama.cpp: a built-in name or a template text it recognises.

    add_assistant: end with the tokens that open the assistant's turn.
    """
    messages = list(messages)
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise ChatTemplateError(f"message {i} needs a text role and content for llama.cpp's template")
        if "\0" in message["role"] or "\0" in message["content"]:
            # llama.cpp reads C strings: everything after a NUL would vanish without a word.
            raise ChatTemplateError(f"message {i} contains a NUL character, which chat templates cannot carry")
    # Keep the encoded strings alive while C reads them.
    encoded = [(m["role"].encode(), m["content"].encode()) for m in messages]
    chat = (_llama.llama_chat_message * len(encoded))(*(_llama.llama_chat_message(r, c) for r, c in encoded))
    tmpl = template.encode()
    size = max(256, 2 * sum(len(r) + len(c) for r, c in encoded))
    while True:
        buf = ctypes.create_string_buffer(size)
        n = _llama.llama_chat_apply_template(tmpl, chat, len(encoded), add_assistant, buf, size)
        if n < 0:
            shown = template if len(template) < 40 else template[:37] + "..."
            raise ChatTemplateError(
                f"llama.cpp does not support the chat template {shown!r}; built-in names: "
                f"{', '.join(builtin_templates())}"
            )
        if n <= size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n + 1


# --- Jinja -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Jinja:
    """One compiled template and what it reads."""

    source: str
    compiled: jinja2.Template
    reads_tools: bool  # uses the `tools` variable
    reads_tool_calls: bool  # shows an assistant's tool_calls
    object_arguments: bool = False  # reads a tool call's arguments as a mapping, not as JSON text
    system_role: bool = True  # shows a system message (some, such as Gemma 2's, raise on one)

    @staticmethod
    def compile(source: str) -> _Jinja:
        return _compile(source)

    def render(self, variables: dict[str, Any]) -> str:
        try:
            return self.compiled.render(variables)
        except _TemplateRaised as e:
            raise _RaisedByTemplate(e.message) from None
        except Exception as e:  # a template is code: any failure in it is the template's, not ours
            kind = "" if isinstance(e, jinja2.TemplateError) else f"{type(e).__name__}: "
            raise ChatTemplateError(f"the chat template failed{_template_line(e)}: {kind}{e}") from None


class _TemplateRaised(jinja2.TemplateError):
    """raise_exception(message) called by the template: its message is the whole error."""


class _RaisedByTemplate(ChatTemplateError):
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
def _compile(source: str) -> _Jinja:
    env = _environment()
    try:
        tree = env.parse(source)
        compiled = env.from_string(tree)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not parse: line {e.lineno}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template does not parse: {e}") from None
    template = _Jinja(
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


def _shows_system_messages(template: _Jinja) -> bool:
    """Whether a system message renders (asked of templates that may get tools described in one)."""
    messages = [{"role": "system", "content": "probe system"}, {"role": "user", "content": "probe user"}]
    try:
        text = template.render({"messages": messages, "add_generation_prompt": True, "bos_token": "", "eos_token": ""})
    except ChatTemplateError:
        return False
    return "probe system" in text


def _reads_arguments_as_mapping(template: _Jinja) -> bool:
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


# --- messages --------------------------------------------------------------------------


def _plain(message: Message, index: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"message {index} is not an object")
    plain = dict(message)
    if plain.get("content") is None:
        plain["content"] = ""
    return plain


def _with_tools_described(
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


def _generic_tool_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _with_object_arguments(message: dict[str, Any]) -> dict[str, Any]:
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


# --- models ----------------------------------------------------------------------------


def _model_template(model: Model, own: str, tokens: dict[str, Any]) -> ChatTemplate:
    if own in builtin_templates():  # llama.cpp answers a built-in name for a few GGUFs that carry none
        return ChatTemplate.builtin(own)
    try:
        return ChatTemplate.jinja(own, tool_use=model.chat_template(TOOL_USE_VARIANT), **tokens)
    except ChatTemplateError as e:
        try:
            fallback = ChatTemplate.builtin(own)  # llama.cpp may still recognise the format by its content
        except ChatTemplateError:
            raise ChatTemplateError(f"{model.path.name}: {e}") from None
        logger.warning("%s: %s; using llama.cpp's built-in template it resembles", model.path.name, e)
        return fallback


def _token_variables(model: Model) -> dict[str, Any]:
    vocab = model.vocab

    def text(token: int) -> str:
        if not 0 <= token < vocab.n_vocab:  # llama.cpp says -1 for "no such token"
            return ""
        return vocab.token_to_piece(token, special=True).decode("utf-8", errors="replace")

    return {"bos_token": text(vocab.bos), "eos_token": text(vocab.eos), "tokenizer_adds_bos": vocab.add_bos}


def _is_name(template: str) -> bool:
    """A name, not Jinja text: no markup at all."""
    return "{{" not in template and "{%" not in template


def _variants_hint(model: Model) -> str:
    prefix = "tokenizer.chat_template."
    names = [key[len(prefix) :] for key in model.meta_keys() if key.startswith(prefix)]
    return f", nor one of this model's templates ({', '.join(names)})" if names else ""
