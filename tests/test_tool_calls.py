"""Tool calls in generated text (helios_core.tool_calls): formats, parsing and grammars, on canned outputs.

No model: the parser reads text, and grammars are matched by llguidance over its byte-level
tokenizer, which spells any text one byte a token.
"""

from __future__ import annotations

import json
import random

import llguidance
import pytest

from helios_core import tool_calls
from helios_core.chat import TOOLS_PREAMBLE, ChatTemplate
from helios_core.tool_calls import (
    GENERIC,
    HERMES,
    LLAMA3,
    MISTRAL,
    MISTRAL_ARGS,
    QWEN3_CODER,
    CallArguments,
    CallStart,
    Content,
    Tool,
    ToolCall,
    ToolCallParser,
    written,
)
from helios_core.tool_calls.qwen3_coder import VALUE_END
from tests.conftest import VOCAB_MODELS

WEATHER = Tool(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
PICK = Tool(  # a $ref into $defs, as pydantic writes nested models: it resolves within the arguments
    "pick",
    {
        "type": "object",
        "properties": {"n": {"$ref": "#/$defs/N"}},
        "required": ["n"],
        "additionalProperties": False,
        "$defs": {"N": {"type": "integer", "minimum": 1, "maximum": 5}},
    },
)
PARIS = ToolCall("get_weather", '{"city": "Paris"}')
THREE = ToolCall("pick", '{"n": 3}')


def parse(text: str, fmt) -> tuple[str, list[ToolCall]]:
    """tool_calls.parse with WEATHER and PICK offered: formats that write raw text read it by their schemas."""
    return tool_calls.parse(text, fmt, [WEATHER, PICK])


def matches(lark: str, text: str) -> bool:
    """Whether the grammar derives `text` as a whole."""
    tokenizer = llguidance.LLTokenizer("byte")
    matcher = llguidance.LLMatcher(tokenizer, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    tokens = tokenizer.tokenize_str(text)
    return matcher.validate_tokens(tokens) == len(tokens) and matcher.consume_tokens(tokens) and matcher.is_accepting()


# --- parsing canned outputs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (GENERIC, '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'),
        (GENERIC, '{"tool_calls":[ {"arguments": {"city": "Paris"}, "name": "get_weather", "id": "c1"} ]}'),
        (HERMES, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
        (HERMES, '<tool_call>{"name":"get_weather","arguments":"{\\"city\\": \\"Paris\\"}"}</tool_call>'),
        (LLAMA3, '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
        (LLAMA3, '<|python_tag|>{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}'),
        (MISTRAL, '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]'),
        (MISTRAL_ARGS, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
    ],
)
def test_each_format_is_read_as_the_call_it_writes(fmt, text):
    # Any whitespace, keys in any order, arguments as an object or as JSON text.
    content, calls = parse(text, fmt)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("fmt", [GENERIC, HERMES, MISTRAL, MISTRAL_ARGS, QWEN3_CODER])
def test_parallel_calls_are_read_in_order(fmt):
    assert parse(written(fmt, [PARIS, THREE]), fmt) == ("", [PARIS, THREE])


@pytest.mark.parametrize("fmt", list(tool_calls.FORMATS.values()))
def test_text_before_a_call_is_the_content_without_the_space_that_leads_to_the_call(fmt):
    assert parse("Let me look that up.\n" + written(fmt, [PARIS]), fmt) == ("Let me look that up.", [PARIS])


def test_text_without_calls_is_left_exactly_as_it_is():
    text = '  Sure: {"tool": 1} and <tool_call without a close\n\n'
    for fmt in tool_calls.FORMATS.values():
        assert parse(text, fmt) == (text, [])


def test_a_trigger_followed_by_no_call_is_content():
    assert parse("use <tool_call> like this </tool_call> ok", HERMES) == (
        "use <tool_call> like this </tool_call> ok",
        [],
    )
    assert parse('x {"tool_calls": "none"}', GENERIC) == ('x {"tool_calls": "none"}', [])


def test_a_call_cut_short_keeps_what_it_has_and_its_syntax_is_never_content():
    assert parse('Hi <tool_call>\n{"name": "get_weather", "arguments": {"ci', HERMES) == (
        "Hi",
        [ToolCall("get_weather", '{"ci')],
    )
    assert parse('Hi <tool_call>\n{"na', HERMES) == ("Hi", [])


def test_strings_inside_arguments_may_hold_braces_quotes_and_escapes():
    arguments = '{"q": "a } b ] \\" c \\\\", "list": [1, {"x": "]"}]}'
    assert parse(written(GENERIC, [ToolCall("f", arguments)]), GENERIC) == ("", [ToolCall("f", arguments)])


@pytest.mark.parametrize("fmt", list(tool_calls.FORMATS.values()))
def test_pieces_of_any_size_give_what_the_whole_text_gives(fmt):
    text = "Checking.\n" + written(fmt, [PARIS, THREE] if fmt.separator is not None else [PARIS]) + "  "
    whole = parse(text, fmt)
    rng = random.Random(7)
    for _ in range(20):
        parser, events, at = ToolCallParser(fmt, [WEATHER, PICK]), [], 0
        while at < len(text):
            size = rng.randint(1, 6)
            events += parser.feed(text[at : at + size])
            at += size
        events += parser.finish()
        assert tool_calls.gather(events) == whole


def test_events_announce_a_call_by_name_then_stream_its_arguments():
    parser = ToolCallParser(HERMES)
    events = parser.feed('Hi <tool_call>\n{"name": "get_weather", "arguments": {"city"')
    assert events == [Content("Hi"), CallStart(0, "get_weather"), CallArguments(0, '{"city"')]
    assert parser.feed(': "Paris"}}\n</tool_call>') == [CallArguments(0, ': "Paris"}')]
    assert parser.finish() == []
    assert parser.n_calls == 1


def test_a_trigger_split_across_pieces_is_held_back_not_shown():
    parser = ToolCallParser(HERMES)
    assert parser.feed("Hi <tool_") == [Content("Hi")]
    assert parser.feed("cal") == []
    assert parser.feed("endar") == [Content(" <tool_calendar")]


# --- which format a template writes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        ("Qwen-Qwen2.5-7B-Instruct", HERMES),
        ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", HERMES),
        ("meta-llama-Llama-3.1-8B-Instruct", LLAMA3),
        ("mistralai-Mistral-Nemo-Instruct-2407", MISTRAL),
        ("Mistral-Small-3.2-24B-Instruct-2506", MISTRAL_ARGS),
        ("Qwen3-Coder", QWEN3_CODER),
        ("Qwen3.5-4B", QWEN3_CODER),
        ("NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", QWEN3_CODER),
        ("StepFun3.5-Flash", QWEN3_CODER),
    ],
)
def test_the_format_is_what_the_template_writes_for_a_call(template, fmt):
    source = (VOCAB_MODELS / "templates" / f"{template}.jinja").read_text()
    assert tool_calls.format_for(ChatTemplate.jinja(source, bos_token="<s>", eos_token="</s>")) is fmt


def test_templates_without_tool_calls_get_the_generic_form():
    assert tool_calls.format_for(ChatTemplate.builtin("gemma")) is GENERIC
    assert tool_calls.format_for(ChatTemplate.jinja("{% for m in messages %}{{ m.content }}{% endfor %}")) is GENERIC


def test_the_generic_form_is_the_one_the_chat_preamble_asks_for():
    assert GENERIC.opening + GENERIC.call[0] + '<tool name>", "arguments": ' in TOOLS_PREAMBLE


# --- grammars -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(tool_calls.FORMATS.values()))
def test_required_allows_only_calls_of_offered_tools_with_valid_arguments(fmt):
    lark = tool_calls.grammar([WEATHER, PICK], fmt, required=True)
    assert matches(lark, written(fmt, [PARIS]))
    assert matches(lark, written(fmt, [THREE]))
    assert not matches(lark, written(fmt, [ToolCall("get_time", "{}")]))  # not offered
    assert not matches(lark, written(fmt, [ToolCall("pick", '{"n": 7}')]))  # above the $ref'd maximum
    assert not matches(lark, written(fmt, [ToolCall("get_weather", '{"town": "Paris"}')]))
    assert not matches(lark, "I would rather not.")
    assert parse(written(fmt, [PARIS]), fmt) == ("", [PARIS])


@pytest.mark.parametrize("fmt", [GENERIC, HERMES, MISTRAL, MISTRAL_ARGS, QWEN3_CODER])
def test_parallel_calls_are_allowed_unless_parallel_is_false(fmt):
    two = written(fmt, [PARIS, THREE])
    assert matches(tool_calls.grammar([WEATHER, PICK], fmt, required=True), two)
    single = tool_calls.grammar([WEATHER, PICK], fmt, required=True, parallel=False)
    assert not matches(single, two) and matches(single, written(fmt, [THREE]))


def test_llama3_writes_one_call():
    lark = tool_calls.grammar([WEATHER, PICK], LLAMA3, required=True)
    assert not matches(lark, '{"name": "pick", "parameters": {"n": 3}}{"name": "pick", "parameters": {"n": 3}}')


@pytest.mark.parametrize("fmt", list(tool_calls.FORMATS.values()))
def test_auto_allows_free_text_and_constrains_a_call_once_it_opens(fmt):
    lark = tool_calls.grammar([WEATHER, PICK], fmt, required=False)
    assert matches(lark, "No tool needed: it is sunny.\n")
    assert matches(lark, "")
    assert matches(lark, "Checking. " + written(fmt, [PARIS]))
    assert not matches(lark, "Checking. " + written(fmt, [ToolCall("get_weather", '{"city": "Oslo", "unit": "K"}')]))
    assert not matches(lark, "Checking. " + written(fmt, [ToolCall("nope", "{}")]))


@pytest.mark.parametrize("fmt", list(tool_calls.FORMATS.values()))
def test_auto_with_a_response_schema_gives_a_json_answer_or_calls(fmt):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    lark = tool_calls.grammar([WEATHER, PICK], fmt, required=False, text_schema=schema)
    assert matches(lark, '{"answer": 42}')
    assert not matches(lark, "free text") and not matches(lark, '{"answer": "x"}')
    assert matches(lark, written(fmt, [THREE]))  # the $ref of its arguments still resolves
    assert not matches(lark, written(fmt, [ToolCall("pick", '{"n": 8}')]))


def test_raw_text_arguments_are_typed_by_their_schemas_and_held_to_their_lengths():
    forecast = Tool(
        "forecast",
        {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}, "tags": {}},
            "required": ["city"],
        },
    )
    text = "<tool_call>\n<function=forecast>\n<parameter=city>\n12\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
    content, calls = tool_calls.parse(text + "</function>\n</tool_call>", QWEN3_CODER, [forecast])
    assert (content, calls) == ("", [ToolCall("forecast", '{"city": "12", "days": 3}')])
    # Without the schema a value stays the text it is.
    assert tool_calls.parse(text + "</function>\n</tool_call>", QWEN3_CODER)[1] == [
        ToolCall("forecast", '{"city": "12", "days": "3"}')
    ]
    lark = tool_calls.grammar([forecast], QWEN3_CODER, required=True)
    assert not matches(lark, written(QWEN3_CODER, [ToolCall("forecast", '{"city": "Rio de Janeiro", "days": 2}')]))
    assert matches(lark, written(QWEN3_CODER, [ToolCall("forecast", '{"city": "Rio", "days": 2}')]))
    assert not matches(lark, written(QWEN3_CODER, [ToolCall("forecast", '{"city": "Rio", "days": "two"}')]))
    assert not matches(lark, written(QWEN3_CODER, [ToolCall("forecast", '{"days": 2}')]))  # city is required


def test_a_raw_text_argument_may_span_lines_and_hold_markup_even_its_closing_tag():
    code = "def f():\n    return '<b>' + \"</parameter>\" + '</function>'\n"
    text = f"<tool_call>\n<function=write>\n<parameter=code>\n{code}\n</parameter>\n</function>\n</tool_call>"
    write = Tool("write", {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]})
    assert tool_calls.parse(text, QWEN3_CODER, [write]) == ("", [ToolCall("write", json.dumps({"code": code}))])
    assert matches(tool_calls.grammar([write], QWEN3_CODER, required=True), text)


def test_a_string_argument_streams_as_it_is_written_and_a_typed_one_once_whole():
    parser = ToolCallParser(QWEN3_CODER, [WEATHER, PICK])
    city = 'Rio de "Janeiro", the marvellous city'
    head = parser.feed(f"<tool_call>\n<function=get_weather>\n<parameter=city>\n{city}")
    # All but what may still open the closing tag (its length less one) is out before the value ends.
    held = len(VALUE_END) - 1
    assert head == [CallStart(0, "get_weather"), CallArguments(0, '{"city": ' + json.dumps(city[:-held])[:-1])]
    rest = parser.feed("\n</parameter>\n</function>\n</tool_call>")
    assert rest == [CallArguments(0, json.dumps(city[-held:])[1:] + "}")]
    events = parser.feed("<tool_call>\n<function=pick>\n<parameter=n>\n4")
    assert events == [CallStart(1, "pick")]  # an integer is typed when it is whole
    events = parser.feed("\n</parameter>\n</function>\n</tool_call>")
    assert events == [CallArguments(1, '{"n": 4}')]


def test_a_value_that_may_be_a_string_is_raw_text_and_json_only_where_its_schema_allows():
    note = Tool(
        "note",
        {
            "type": "object",
            "properties": {
                "title": {"anyOf": [{"type": "string"}, {"type": "null"}]},  # pydantic's Optional[str]
                "count": {"type": ["integer", "string"]},
                "done": {"type": "boolean"},
                "any": {},
            },
        },
    )

    def call(**values) -> str:
        tags = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in values.items())
        return f"<tool_call>\n<function=note>\n{tags}</function>\n</tool_call>"

    read = tool_calls.parse(call(title="null", count="7", done="True", any="[1, 2]"), QWEN3_CODER, [note])[1]
    assert json.loads(read[0].arguments) == {"title": None, "count": 7, "done": True, "any": [1, 2]}
    read = tool_calls.parse(call(title="42", count="seven", any="plain words"), QWEN3_CODER, [note])[1]
    assert json.loads(read[0].arguments) == {"title": "42", "count": "seven", "any": "plain words"}
    lark = tool_calls.grammar([note], QWEN3_CODER, required=True)
    assert matches(lark, call(title="Groceries, then\nthe bank", any="anything at all"))  # raw, as templates write
    assert not matches(lark, call(done="maybe"))


def test_a_call_without_its_tool_call_tags_is_still_read():
    text = "Sure.\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>"
    assert parse(text, QWEN3_CODER) == ("Sure.", [PARIS])
    assert tool_calls.parse(text, QWEN3_CODER, [Tool("get_weather", None)]) == ("Sure.", [PARIS])  # no schema


def test_a_marker_that_is_a_control_token_is_named_by_its_id():
    lark = tool_calls.grammar([WEATHER], MISTRAL_ARGS, required=False, specials={"[TOOL_CALLS]": 9, "[ARGS]": 10})
    assert "calls_hd: TEXT <[9]>" in lark  # a control token ends free text by itself: no lazy trigger
    assert '"get_weather" <[10]> %json' in lark and '"[ARGS]"' not in lark


def test_a_tool_without_parameters_takes_an_empty_object():
    (tool,) = tool_calls.tools_of([{"type": "function", "function": {"name": "now"}}])
    lark = tool_calls.grammar([tool], GENERIC, required=True)
    assert matches(lark, written(GENERIC, [ToolCall("now", "{}")]))
    assert not matches(lark, written(GENERIC, [ToolCall("now", '{"x": 1}')]))


def test_arguments_are_an_object_even_when_the_schema_names_no_type():
    (tool,) = tool_calls.tools_of([{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}])
    lark = tool_calls.grammar([tool], GENERIC, required=True)
    assert matches(lark, written(GENERIC, [ToolCall("f", '{"a": 1}')]))
    assert not matches(lark, written(GENERIC, [ToolCall("f", "1")]))


def test_grammars_compile_without_a_vocabulary_for_every_format_and_choice():
    for fmt in tool_calls.FORMATS.values():
        for required in (True, False):
            for parallel in (True, False):
                lark = tool_calls.grammar([WEATHER, PICK], fmt, required=required, parallel=parallel)
                assert llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark), None) == ""


def test_a_grammar_needs_a_tool():
    with pytest.raises(ValueError, match="at least one tool"):
        tool_calls.grammar([], GENERIC, required=True)
