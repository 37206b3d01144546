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

Modules: template (ChatTemplate, load), jinja (compiling and probing Jinja templates),
builtin (llama.cpp's own), messages (the generic forms).
"""

from helios_core.chat.builtin import apply_template, builtin_templates
from helios_core.chat.messages import TOOLS_PREAMBLE, Message
from helios_core.chat.template import TOOL_USE_VARIANT, ChatTemplate, load, read_template_file, template_for

__all__ = [
    "TOOLS_PREAMBLE",
    "TOOL_USE_VARIANT",
    "ChatTemplate",
    "Message",
    "apply_template",
    "builtin_templates",
    "load",
    "read_template_file",
    "template_for",
]
