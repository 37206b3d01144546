"""ChatTemplate, and `load`: which template renders a model's chats."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from helios_core.chat.builtin import apply_template, builtin_templates
from helios_core.chat.jinja import JinjaTemplate, RaisedByTemplate
from helios_core.chat.messages import (
    Message,
    generic_tool_messages,
    plain,
    with_object_arguments,
    with_tools_described,
)
from helios_core.errors import ChatTemplateError
from helios_core.model import Model

logger = logging.getLogger("helios.chat")

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


class ChatTemplate:
    """How one model's messages become prompt text. Build with `load()`, or `jinja()` / `builtin()`.

    Compiling happens once, here; `render` is safe to call from many threads.
    """

    def __init__(
        self,
        *,
        builtin: str | None = None,
        default: JinjaTemplate | None = None,
        tool_use: JinjaTemplate | None = None,
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
            default=JinjaTemplate.compile(source),
            tool_use=JinjaTemplate.compile(tool_use) if tool_use else None,
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
        continue_final_message: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text for `messages`, to tokenize with add_special=True and parse_special=True.

        messages: OpenAI chat messages. An assistant's `tool_calls` and a tool message's `tool_call_id`
        and `name` reach a Jinja template as given, but for two things: a null content reaches it as ""
        (Jinja would print None as the text "None"), and a call's arguments, JSON text in OpenAI's API,
        reach a template that reads them as a mapping (most do) as the object the text encodes.
        tools: OpenAI tool definitions ({"type": "function", "function": {...}}), or None.
        add_generation_prompt: end with the tokens that open the assistant's turn.
        continue_final_message: end just after the final (assistant) message's text, its turn left
            open, so the model continues that text (a prefill); add_generation_prompt is then moot.
        variables: further template variables (e.g. enable_thinking); a Jinja template's only.
        Raises ChatTemplateError with the template's own message when it raises or fails.
        """
        messages = [plain(m, i) for i, m in enumerate(messages)]
        if not continue_final_message:
            return self._render(messages, tools, add_generation_prompt, variables)
        return _open_final_message(self._render(messages, tools, False, variables), messages)

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        add_generation_prompt: bool,
        variables: Mapping[str, Any] | None,
    ) -> str:
        tools = list(tools) if tools else None
        if self._default is None:
            return self._render_builtin(messages, tools, add_generation_prompt)
        if tools and self._tool_use:
            try:
                return self._render_jinja(self._tool_use, messages, tools, add_generation_prompt, variables)
            except RaisedByTemplate:
                raise
            except ChatTemplateError as e:
                # Some tool_use variants predate OpenAI's tool shape (Command-R's reads Cohere's own):
                # the default template, with the tools in the generic form, still serves the request.
                logger.debug("the tool_use template failed (%s); rendering with the default one", e)
        return self._render_jinja(self._default, messages, tools, add_generation_prompt, variables)

    def _render_jinja(
        self,
        template: JinjaTemplate,
        messages: list[dict[str, Any]],
        tools,
        add_generation_prompt: bool,
        variables: Mapping[str, Any] | None,
    ) -> str:
        if tools and not template.reads_tools:
            messages = with_tools_described(messages, tools, system_role=template.system_role)
        if not template.reads_tool_calls:
            messages = generic_tool_messages(messages)
        elif template.object_arguments:
            messages = [with_object_arguments(m) for m in messages]
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
            messages = with_tools_described(messages, tools)
        return apply_template(self._builtin, generic_tool_messages(messages), add_assistant=add_generation_prompt)

    def __repr__(self) -> str:
        if self._builtin is not None:
            return f"ChatTemplate(builtin={self._builtin!r})"
        variants = ", tool_use" if self._tool_use else ""
        return f"ChatTemplate(jinja, {len(self._default.source)} chars{variants})"


def _open_final_message(text: str, messages: list[dict[str, Any]]) -> str:
    """`text` cut just after the final message's content: that turn stays open for the model to continue.

    A template writes the content as given, or trimmed (many apply `| trim`), and closes the turn
    after it; what it writes after the content's last occurrence is that closing.
    """
    final = messages[-1] if messages else {}
    if final.get("role") != "assistant":
        raise ChatTemplateError("only a final assistant message can be continued")
    content = final.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ChatTemplateError("the final assistant message has no text to continue")
    found = [(text.rfind(written), written) for written in (content, content.strip())]
    ends = [at + len(written) for at, written in found if at >= 0]
    if not ends:
        raise ChatTemplateError("the chat template does not write the final message's text, so it cannot be continued")
    return text[: max(ends)]  # the later end: an untrimmed copy may also stand earlier (in a user's message)


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
        JinjaTemplate.compile(text)
    except ChatTemplateError as e:
        raise ChatTemplateError(f"chat template file {path}: {e}") from None
    return text


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
