"""llama.cpp's built-in chat templates (llama_chat_apply_template), for models whose GGUF carries none."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Mapping

from helios_core import _llama
from helios_core.errors import ChatTemplateError


def builtin_templates() -> list[str]:
    """Names of the templates llama.cpp implements, e.g. 'chatml', 'gemma', 'llama3'."""
    n = _llama.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * n)()
    _llama.llama_chat_builtin_templates(names, n)
    return [name.decode() for name in names]


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
