"""Tool calls in generated text: the syntaxes models write them in, a parser for them, and grammars that constrain them.

A `ToolCallFormat` is one syntax, the one a chat template shows an assistant's calls in. One module each:

    generic   {"tool_calls": [{"name": "f", "arguments": {...}}]}   (chat.TOOLS_PREAMBLE asks for it)
    hermes    <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   (Hermes, Qwen 2.5/3, Granite)
    llama3    {"name": "f", "parameters": {...}}   (Llama 3.1-3.3; <|python_tag|> may open it)
    mistral   [TOOL_CALLS][{"name": "f", "arguments": {...}}]   (Mistral v0.3, Nemo)
              and mistral_args: [TOOL_CALLS]f[ARGS]{...}   (Mistral Small 3.2, Devstral)
    qwen3_coder  <tool_call>\n<function=f>\n<parameter=k>\nv\n</parameter>\n</function>\n</tool_call>
              (Qwen3-Coder, Qwen3.5, Nemotron 3 Nano, Step 3.5: raw text per argument, not JSON)

A format module holds the format, how its calls read after their trigger (`read`), and how to
recognise it in a template's rendering (`detect`). A new format is a new module, listed in
`_DETECTORS` and `FORMATS` below.

`format_for(template)` tells which one a template uses, from one probe render.

`grammar(tools, format, required=...)` (grammar.py) writes a Lark grammar for llguidance
(helios_core.constraint.grammar) in which every call names one of `tools` and
its arguments are valid for that tool's `parameters` schema:

- required: the whole output is calls (one, or several when `parallel`).
- auto: free text, or free text then calls. The calls are constrained from
  the moment their opening text (the format's trigger) appears, through a
  lazy lexeme: until then the text is free, after it nothing but a valid
  call can follow.

`ToolCallParser` (parser.py) follows the generated text piece by piece and splits it
into content and calls (`Content`, `CallStart`, `CallArguments` events), so
that a stream carries a call's arguments as they are generated and never
shows the call's syntax as content. `parse(text, format)` is the same parser
over a whole text, so a streamed answer and a whole one always agree.

Pure functions over text: nothing here needs a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from helios_core.errors import ChatTemplateError
from helios_core.tool_calls import hermes, llama3, mistral, qwen3_coder
from helios_core.tool_calls.format import Tool, ToolCall, ToolCallFormat, tools_of
from helios_core.tool_calls.generic import GENERIC
from helios_core.tool_calls.grammar import LENIENT, grammar
from helios_core.tool_calls.hermes import HERMES
from helios_core.tool_calls.llama3 import LLAMA3
from helios_core.tool_calls.mistral import MISTRAL, MISTRAL_ARGS
from helios_core.tool_calls.parser import CallArguments, CallStart, Content, ToolCallParser, gather, parse
from helios_core.tool_calls.qwen3_coder import QWEN3_CODER

if TYPE_CHECKING:
    from helios_core.chat import ChatTemplate

__all__ = [
    "FORMATS",
    "GENERIC",
    "LENIENT",
    "HERMES",
    "LLAMA3",
    "MISTRAL",
    "MISTRAL_ARGS",
    "QWEN3_CODER",
    "CallArguments",
    "CallStart",
    "Content",
    "Tool",
    "ToolCall",
    "ToolCallFormat",
    "ToolCallParser",
    "detect_format",
    "format_for",
    "gather",
    "grammar",
    "parse",
    "tools_of",
    "written",
]

FORMATS = {f.name: f for f in (GENERIC, HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS, QWEN3_CODER)}
# In this order: a Mistral rendering may also hold JSON that reads as another format's call.
_DETECTORS = (mistral.detect, qwen3_coder.detect, hermes.detect, llama3.detect)

_PROBE_NAME = "probe_tool"  # the detectors look for this name
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": _PROBE_NAME, "description": "probe", "parameters": {"type": "object", "properties": {}}},
}
_PROBE_MESSAGES = [
    {"role": "user", "content": "probe question"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "probe0001",  # 9 letters and digits, as Mistral's templates demand
                "type": "function",
                "function": {"name": _PROBE_NAME, "arguments": '{"probe_arg": "probe_value"}'},
            }
        ],
    },
]


def written(fmt: ToolCallFormat, calls: list[ToolCall]) -> str:
    """Calls as `fmt` writes them, what its grammar produces: parse's inverse (tests and rehearsals)."""
    arguments = qwen3_coder.write_arguments if fmt.arguments == "xml" else str
    each = [fmt.call[0] + c.name + fmt.call[1] + arguments(c.arguments) + fmt.call[2] for c in calls]
    return fmt.opening + (fmt.separator or "").join(each) + fmt.closing


def format_for(template: ChatTemplate) -> ToolCallFormat:
    """The format `template` shows an assistant's tool calls in; generic when it shows none we know.

    One render of a probe conversation (under a millisecond for most templates), as llama.cpp
    probes its templates: what a template writes is what its model was trained to write.
    """
    try:
        text = template.render(_PROBE_MESSAGES, [_PROBE_TOOL], add_generation_prompt=False)
    except ChatTemplateError:
        return GENERIC
    return detect_format(text)


def detect_format(rendered: str) -> ToolCallFormat:
    """The format of a probe conversation's rendering (see format_for): its call of `probe_tool`."""
    for detect in _DETECTORS:
        found = detect(rendered)
        if found is not None:
            return found
    return GENERIC
