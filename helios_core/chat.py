"""Chat templates: turn a list of messages into the prompt text a model was trained on.

llama.cpp's llama_chat_apply_template knows a fixed set of templates, by
name ("gemma", "chatml", ...) or recognised from a Jinja template string's
content. We pick the template in this order: one named by the caller, the
model's own (GGUF `tokenizer.chat_template`), then llama.cpp's built-in for
the model's architecture. Never a hard-coded format.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Mapping

from helios_core import _llama
from helios_core.errors import ChatTemplateError
from helios_core.model import Model

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


def builtin_templates() -> list[str]:
    """Names of the templates llama.cpp implements, e.g. 'chatml', 'gemma', 'llama3'."""
    n = _llama.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * n)()
    _llama.llama_chat_builtin_templates(names, n)
    return [name.decode() for name in names]


def template_for(model: Model, name: str | None = None) -> str:
    """The template to use for a model: `name` if given, else its own, else its architecture's."""
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
    """Render messages ({"role", "content"}) with a built-in name or a template string.

    add_assistant: end with the tokens that open the assistant's turn.
    """
    messages = list(messages)
    for i, message in enumerate(messages):
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
