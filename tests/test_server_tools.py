"""Tools over HTTP (issue 9 §4), through the openai SDK: tools, tool_choice, parallel_tool_calls, tool_calls.

The default model is a base model that follows no instruction: every call here names an offered
function with valid arguments because the constraint allows nothing else. Gemma's built-in
template cannot show tools, so calls take the generic form; a second server renders with
Qwen 2.5's template (one llama.cpp ships), whose calls are Hermes' <tool_call> tags.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import llguidance
import openai
import pytest

from helios_core import constraint, tool_calls
from helios_core.chat import ChatTemplate
from helios_core.generate import Step
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_http import tools
from tests.conftest import PATIENCE, VOCAB_MODELS
from tests.server_process import PLAIN, ServerProcess
from tests.test_readme import doc_block

QWEN25 = VOCAB_MODELS / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
QWEN3_CODER = VOCAB_MODELS / "templates" / "Qwen3-Coder.jinja"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET", "JST"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GET_TIME = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*PLAIN)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


@pytest.fixture(scope="module")
def hermes_client():
    proc = ServerProcess("--ctx-size", "1024", "--parallel", "1", "--chat-template-file", str(QWEN25))
    yield openai.OpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)
    proc.stop()


def ask(client, messages=ASK, **kw):
    kw = {"tools": TOOLS, "max_tokens": 48, "temperature": 0, **kw}
    return client.chat.completions.create(model="m", messages=messages, **kw)


def calls_of(message) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in message.tool_calls or []]


def assert_valid(calls: list[tuple[str, str]], offered=SCHEMAS) -> None:
    assert calls
    for name, arguments in calls:
        jsonschema.validate(json.loads(arguments), offered[name])


def whole_and_streamed(client, messages, **kw):
    """One greedy request answered whole, then streamed, from the same cache state.

    A first request leaves the prompt cached, so both answers decode only its last token in the
    same slot: tokens from other batch shapes or cache states may differ on some CPUs.
    """
    ask(client, messages, tool_choice="none", max_tokens=1)
    whole = ask(client, messages, **kw).choices[0]
    return whole, reassembled(ask(client, messages, stream=True, **kw))


def reassembled(chunks) -> tuple[str | None, list[tuple[str, str]], str | None]:
    """Content, calls and finish_reason of a stream, checking each tool-call delta's shape on the way."""
    content, names, arguments, finish = None, {}, {}, None
    for chunk in chunks:
        (choice,) = chunk.choices
        delta = choice.delta
        if delta.content:
            content = (content or "") + delta.content
        for piece in delta.tool_calls or []:
            if piece.index not in names:  # the first delta of a call: id, type and name, no arguments yet
                assert piece.id.startswith("call_") and piece.type == "function"
                assert piece.function.arguments == ""
                names[piece.index], arguments[piece.index] = piece.function.name, ""
            else:  # then only pieces of the arguments
                assert piece.id is None and piece.function.name is None
                arguments[piece.index] += piece.function.arguments
        finish = choice.finish_reason or finish
    return content, [(names[i], arguments[i]) for i in sorted(names)], finish


# --- the default model: the generic form -------------------------------------------------------


def test_required_without_parallel_calls_calls_one_offered_tool_with_valid_arguments(client):
    choice = ask(client, tool_choice="required", parallel_tool_calls=False).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert_valid(calls_of(choice.message))


def test_a_named_function_is_called_once_with_valid_arguments(client):
    choice = ask(client, tool_choice=GET_TIME).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [name for name, _ in calls_of(choice.message)] == ["get_time"]
    assert_valid(calls_of(choice.message))


@pytest.mark.parametrize("tool_choice", ["required", GET_TIME], ids=["required", "named"])
def test_a_streamed_answer_reassembles_to_the_whole_one(client, tool_choice):
    messages = [{"role": "user", "content": f"Weather or time? ({tool_choice})"}]
    whole, (content, calls, finish) = whole_and_streamed(client, messages, tool_choice=tool_choice)
    assert (content, calls, finish) == (whole.message.content, calls_of(whole.message), whole.finish_reason)
    if finish == "tool_calls":  # parallel calls may run into max_tokens: then the last one is cut
        assert_valid(calls)


def test_the_readmes_tools_example_calls_the_tool(server, capsys):
    code = doc_block("tools-example").replace("8000", str(server.port))
    exec(compile(code, "tools-example", "exec"), {})
    assert capsys.readouterr().out.startswith("get_weather {")


def test_auto_gives_text_or_valid_calls_and_never_shows_call_syntax(client):
    # Sampled, seeded: whatever the base model writes, a call it opens is valid and its syntax is no content.
    choice = ask(client, tool_choice="auto", temperature=1.0, seed=5).choices[0]
    assert '{"tool_calls"' not in (choice.message.content or "")
    if choice.finish_reason == "tool_calls":
        assert_valid(calls_of(choice.message))
    else:
        assert choice.finish_reason in ("stop", "length")


def test_none_answers_with_text_but_the_template_still_shows_the_tools(client):
    choice = ask(client, tool_choice="none", max_tokens=4).choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason != "tool_calls"
    with_tools = ask(client, tool_choice="none", max_tokens=1).usage.prompt_tokens
    without = client.chat.completions.create(model="m", messages=ASK, max_tokens=1).usage.prompt_tokens
    assert with_tools > without  # as OpenAI and llama-server: the model still knows its tools


def test_a_response_format_under_auto_shapes_the_text_answer(client):
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    choice = ask(
        client,
        tool_choice="auto",
        parallel_tool_calls=False,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    ).choices[0]
    if choice.message.tool_calls:  # a JSON answer, or a call: never free text
        assert choice.finish_reason == "tool_calls"
        assert_valid(calls_of(choice.message))
    else:
        jsonschema.validate(json.loads(choice.message.content), schema)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}]},
            "tools[0].function.parameters",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"tools": {"get_weather": WEATHER}}, "tools"),
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_news"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"tools": TOOLS, "grammar": 'start: "yes"'}, "grammar"),
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": []}]}, "messages[0].tool_calls"),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {}}]}]},
            "messages[0].tool_calls[0]",
        ),
    ],
)
def test_invalid_tools_and_tool_choice_are_400s_naming_the_field(server, fields, param):
    body = {"messages": ASK, "max_tokens": 1, **fields}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=PATIENCE)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


# --- a template with tool support: Qwen 2.5's Hermes-style <tool_call> tags -------------------------


def test_calls_in_hermes_tags_are_parsed_and_the_tags_never_reach_the_content(hermes_client):
    whole, streamed = whole_and_streamed(hermes_client, ASK, tool_choice="required", parallel_tool_calls=False)
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    assert_valid(calls_of(whole.message))
    assert streamed == (None, calls_of(whole.message), "tool_calls")


FORECAST = {
    "type": "function",
    "function": {
        "name": "get_forecast",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def xml_client():
    """Qwen3-Coder's template: calls in its XML, one raw-text tag per argument."""
    with ServerProcess("--ctx-size", "1024", "--parallel", "1", "--chat-template-file", str(QWEN3_CODER)) as proc:
        yield openai.OpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


def test_calls_in_qwen3_coders_xml_come_back_as_json_arguments_typed_by_their_schema(xml_client):
    offered = [*TOOLS, FORECAST]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in offered}
    forced = {"type": "function", "function": {"name": "get_forecast"}}
    # Its syntax is longer than JSON's: room for it all, whatever the city.
    whole, streamed = whole_and_streamed(xml_client, ASK, tools=offered, tool_choice=forced, max_tokens=128)
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    assert_valid(calls_of(whole.message), schemas)  # "days" is a JSON integer, not the text "3"
    assert streamed == (None, calls_of(whole.message), "tool_calls")
    required = ask(xml_client, ASK, tool_choice="required", parallel_tool_calls=False, max_tokens=128).choices[0]
    assert required.finish_reason == "tool_calls"
    assert_valid(calls_of(required.message))


def test_a_call_fed_back_to_qwen3_coders_template_is_written_as_its_xml(xml_client):
    forecast = {"name": "get_forecast", "arguments": '{"city": "Oslo", "days": 3}'}
    call = {"id": "c1", "type": "function", "function": forecast}
    turns = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "content": "rain"}]
    expected = ChatTemplate.jinja(QWEN3_CODER.read_text()).render(turns, [FORECAST])
    assert "<function=get_forecast>\n<parameter=city>\nOslo\n</parameter>\n<parameter=days>\n3\n" in expected
    with Model(default_model_path(), vocab_only=True) as gemma:
        n_expected = len(gemma.vocab.tokenize(expected, add_special=True, parse_special=True))
    sent = ask(xml_client, turns, tools=[FORECAST], tool_choice="none", max_tokens=1)
    assert sent.usage.prompt_tokens == n_expected


def test_a_tool_result_fed_back_is_rendered_by_the_template_as_it_writes_it(hermes_client):
    arguments = '{"city": "Paris", "unit": "celsius"}'
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    turns = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    expected = ChatTemplate.jinja(QWEN25.read_text()).render(turns, TOOLS)
    assert '<tool_call>\n{"name": "get_weather", "arguments": ' + arguments + "}\n</tool_call>" in expected
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in expected
    with Model(default_model_path(), vocab_only=True) as gemma:
        n_expected = len(gemma.vocab.tokenize(expected, add_special=True, parse_special=True))
    # The server rendered exactly this text: the messages reached the template intact.
    assert ask(hermes_client, turns, tool_choice="none", max_tokens=1).usage.prompt_tokens == n_expected


# --- markers that are control tokens (Mistral's [TOOL_CALLS], Hermes' tags in some vocabularies) ----------


def test_a_marker_that_is_a_control_token_is_generated_as_that_token_and_read_back():
    # Llama 3's vocabulary stands in for one whose [TOOL_CALLS] is a control token: its
    # <|start_header_id|> plays the marker (no Mistral vocabulary ships with llama.cpp).
    with Model(VOCAB_MODELS / "ggml-vocab-llama-bpe.gguf", vocab_only=True) as model:
        vocab = model.vocab
        assert tools.control_tokens(vocab, ("<|start_header_id|>", "<tool_call>")) == {128006: "<|start_header_id|>"}
        lark = tool_calls.grammar(
            tool_calls.tools_of([CLOCK]), tool_calls.MISTRAL_ARGS, required=True, specials={"[TOOL_CALLS]": 128006}
        )
        text_tokens = vocab.tokenize('get_time[ARGS]{"zone": "CET"}', add_special=False)
        handle = model.handle()  # llguidance's tokenizer calls into the vocabulary
        tokenizer = constraint.tokenizer_for(model)
        matcher = llguidance.LLMatcher(tokenizer, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
        assert matcher.validate_tokens([128006, *text_tokens]) == 1 + len(text_tokens)
        spelled = vocab.tokenize("[TOOL_CALLS]", add_special=False)
        assert matcher.validate_tokens(spelled) == 0  # the marker's text spelled out is not the marker
        del handle
        # The generated text leaves the control token out; the follower puts its text back for the parser.
        follower = tools.CallFollower(tools.ToolPlan(tool_calls.MISTRAL_ARGS, {128006: "[TOOL_CALLS]"}))
        steps = [Step(128006, "")] + [Step(t, vocab.token_to_piece(t).decode()) for t in text_tokens]
        deltas = [d for step in steps for d in follower.feed(step)] + follower.finish()
    assert deltas[0]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": ""}
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:]) == '{"zone": "CET"}'
