"""Chat templates rendered with Jinja, as transformers renders them (issue 9, section 3).

Hand-written templates and llama.cpp's vocabulary-only GGUFs (some carry their model's
template): no weights are loaded. Built-in llama.cpp templates stay the path for models
without one, such as the default Gemma.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from helios_cli.main import build_parser
from helios_core import chat
from helios_core.chat import ChatTemplate
from helios_core.errors import ChatTemplateError
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_http.app import build_app
from helios_http.state import ServerState
from tests.conftest import VOCAB_MODELS

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18 C"},
]


def vocab(name: str):
    with Model(VOCAB_MODELS / f"ggml-vocab-{name}.gguf", vocab_only=True) as m:
        yield m


@pytest.fixture(scope="module")
def qwen2():
    """Its GGUF carries Qwen's ChatML template (no tools)."""
    yield from vocab("qwen2")


@pytest.fixture(scope="module")
def command_r():
    """Its GGUF carries a default template (which raises on roles out of turn) and tool_use and rag variants."""
    yield from vocab("command-r")


@pytest.fixture(scope="module")
def gemma():
    """The default model's vocabulary: no chat template in its GGUF."""
    with Model(default_model_path(), vocab_only=True) as m:
        yield m


def render(source: str, messages=MESSAGES, **kw) -> str:
    return ChatTemplate.jinja(source).render(messages, **kw)


# --- the Jinja environment ------------------------------------------------------------------


def test_a_chatml_template_renders_every_message_and_opens_the_assistants_turn():
    assert render(CHATML) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_without_add_generation_prompt_the_text_ends_after_the_last_message():
    assert render(CHATML, add_generation_prompt=False).endswith("<|im_start|>user\nHi<|im_end|>\n")


PREFILL = [*MESSAGES, {"role": "assistant", "content": "Hi there,"}]
TRIMMING = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_final_assistant_message_is_continued_its_turn_left_open():
    assert render(CHATML, PREFILL, continue_final_message=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHi there,"
    )


def test_a_builtin_template_continues_the_final_message_too(gemma):
    text = chat.load(gemma).render(PREFILL, continue_final_message=True)
    assert text.endswith("<start_of_turn>model\nHi there,")


def test_a_prefill_a_template_trims_is_continued_where_the_trimmed_text_ends():
    # " Hi" also stands, untrimmed, in the user's turn: the cut is at the final message, not there.
    messages = [{"role": "user", "content": "Say Hi"}, {"role": "assistant", "content": " Hi"}]
    assert render(TRIMMING, messages, continue_final_message=True).endswith("<|im_start|>assistant\nHi")


@pytest.mark.parametrize(
    ("messages", "named"),
    [(MESSAGES, "only a final assistant message"), ([*MESSAGES, {"role": "assistant", "content": " "}], "no text")],
)
def test_only_an_assistant_message_with_text_can_be_continued(messages, named):
    with pytest.raises(ChatTemplateError, match=named):
        render(CHATML, messages, continue_final_message=True)


def test_blocks_are_trimmed_as_in_transformers():
    # trim_blocks drops the newline after a block tag, lstrip_blocks the indent before one.
    source = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    assert render(source) == "[Hi]\n"


def test_bos_and_eos_are_the_models_token_text(command_r):
    template = chat.load(command_r, "{{ '[' + bos_token + '|' + eos_token + ']' }}")
    assert template.render(MESSAGES) == "[<BOS_TOKEN>|<|END_OF_TURN_TOKEN|>]"


def test_a_bos_the_template_writes_is_dropped_when_the_tokenizer_adds_one(command_r):
    vocab = command_r.vocab
    assert vocab.add_bos
    text = chat.load(command_r, "{{ bos_token }}{{ messages[0].content }}").render(MESSAGES)
    assert text == "Be brief."
    tokens = vocab.tokenize(text, add_special=True, parse_special=True)
    assert tokens[0] == vocab.bos and vocab.bos not in tokens[1:]


def test_raise_exception_is_a_chat_template_error_with_the_templates_own_message():
    source = "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    with pytest.raises(ChatTemplateError) as raised:
        render(source)
    assert str(raised.value) == "System role not supported"


def test_the_sandbox_refuses_python_internals():
    with pytest.raises(ChatTemplateError, match="unsafe"):
        render("{{ ''.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError, match="unsafe"):
        render("{% set x = messages.append(messages[0]) %}")  # nor may a template change the messages


def test_a_failing_template_names_its_line():
    with pytest.raises(ChatTemplateError, match=r"at line 2: .*TypeError"):
        render("ok\n{{ messages[0].content + 1 }}")


def test_a_template_that_does_not_parse_says_where():
    with pytest.raises(ChatTemplateError, match=r"does not parse: line 1: .*endfor"):
        ChatTemplate.jinja("{% for m in messages %}")


def test_strftime_now_formats_the_local_time():
    before = datetime.now().strftime("%Y-%m-%d")
    text = render("{{ strftime_now('%Y-%m-%d') }}")
    assert text in {before, datetime.now().strftime("%Y-%m-%d")}


def test_tojson_keeps_unicode_and_markup_and_takes_an_indent():
    value = {"role": "user", "content": "café <b>&</b> 'x'"}
    assert render("{{ messages[0] | tojson }}", [value]) == json.dumps(value, ensure_ascii=False)
    assert render("{{ messages[0] | tojson(indent=2) }}", [value]) == json.dumps(value, ensure_ascii=False, indent=2)


def test_loop_controls_and_generation_blocks_are_understood():
    source = (
        "{% for m in messages %}{% if m.role == 'user' %}{% break %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    assert render(source) == "Be brief."


def test_further_variables_reach_the_template():
    source = "{% if enable_thinking is defined and not enable_thinking %}no thinking{% endif %}"
    assert render(source, variables={"enable_thinking": False}) == "no thinking"


# --- tools -----------------------------------------------------------------------------------


def test_tools_reach_the_template_as_given():
    source = "{% for t in tools %}{{ t.function.name }}: {{ t.function.parameters | tojson }}{% endfor %}"
    assert render(source, tools=[WEATHER]) == "get_weather: " + json.dumps(WEATHER["function"]["parameters"])


def test_tool_calls_and_tool_messages_reach_the_template_intact():
    source = (
        "{% for m in messages %}{{ m.role }}:"
        "{% for c in m.tool_calls or [] %}{{ c.id }} {{ c.type }} {{ c.function.name }} {{ c.function.arguments }}"
        "{% endfor %}{% if m.role == 'tool' %}{{ m.tool_call_id }} {{ m.name }} {{ m.content }}{% endif %}|{% endfor %}"
    )
    assert render(source, TOOL_TURNS) == (
        'user:|assistant:call_1 function get_weather {"city": "Paris"}|tool:call_1 get_weather 18 C|'
    )


def test_a_template_that_reads_arguments_as_a_mapping_gets_the_object():
    # Qwen 2.5's and Hermes' templates write `arguments | tojson`: JSON text would come out encoded twice.
    source = (
        "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}"
        "{% endfor %}{% endfor %}"
    )
    assert render(source, TOOL_TURNS) == '{"city": "Paris"}'
    assert CALL["function"]["arguments"] == '{"city": "Paris"}'  # the caller's message is left as it was


def test_a_null_content_reaches_the_template_as_empty_text():
    source = "{% for m in messages %}[{{ m.content }}] {{ m.tool_calls | length }} call{% endfor %}"
    assert render(source, TOOL_TURNS[1:2]) == "[] 1 call"


def test_the_tool_use_variant_renders_when_tools_are_given():
    template = ChatTemplate.jinja("default", tool_use="tools: {{ tools | length }}")
    assert template.render(MESSAGES) == "default"
    assert template.render(MESSAGES, tools=[WEATHER]) == "tools: 1"


def test_command_rs_tool_use_variant_renders_tools_in_its_own_shape(command_r):
    cohere_tool = {"name": "get_weather", "description": "Weather", "parameter_definitions": {}}
    text = chat.load(command_r).render([{"role": "user", "content": "hi"}], tools=[cohere_tool])
    assert "def get_weather() -> List[Dict]:" in text and "directly-answer" in text


def test_a_tool_use_variant_that_fails_on_openais_shape_falls_back_to_the_default(command_r):
    # Command-R's variant reads Cohere's tool shape; OpenAI's gets the default template and the generic form.
    text = chat.load(command_r).render([{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert text.startswith("<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>" + chat.TOOLS_PREAMBLE)
    assert "directly-answer" not in text and '"name": "get_weather"' in text


def test_a_template_without_tool_support_gets_tools_and_calls_in_the_generic_form(qwen2):
    text = chat.load(qwen2).render(TOOL_TURNS, tools=[WEATHER])
    assert text.startswith("<|im_start|>system\n" + chat.TOOLS_PREAMBLE + json.dumps(WEATHER["function"]))
    call = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}]}
    assert f"<|im_start|>assistant\n{json.dumps(call)}<|im_end|>" in text
    result = {"tool_response": {"tool_call_id": "call_1", "name": "get_weather", "content": "18 C"}}
    assert f"<|im_start|>user\n{json.dumps(result)}<|im_end|>" in text


def test_a_template_that_refuses_system_messages_gets_tools_in_the_first_user_message():
    source = (
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}[{{ m.role }}: {{ m.content }}]{% endfor %}"
    )
    text = render(source, [{"role": "user", "content": "Hi"}], tools=[WEATHER])
    assert text == f"[user: {chat.TOOLS_PREAMBLE}{json.dumps(WEATHER['function'])}\n\nHi]"


def test_a_builtin_template_gets_tools_and_calls_in_the_generic_form(gemma):
    text = chat.load(gemma).render(TOOL_TURNS, tools=[WEATHER])
    assert text.startswith("<start_of_turn>user\n" + chat.TOOLS_PREAMBLE.strip())  # gemma folds system in
    assert '<start_of_turn>model\n{"tool_calls": [{"name": "get_weather"' in text
    assert '<start_of_turn>user\n{"tool_response": {"tool_call_id": "call_1"' in text
    assert text.endswith("<start_of_turn>model\n")


# --- templates from GGUFs, and llama.cpp's built-ins ---------------------------------------


def test_qwens_gguf_template_renders_what_llama_cpps_chatml_renders(qwen2):
    template = chat.load(qwen2)
    assert template.source == qwen2.chat_template() and template.builtin_name is None
    assert template.render(MESSAGES) == chat.apply_template("chatml", MESSAGES)
    assert template.render(MESSAGES) == chat.apply_template(qwen2.chat_template(), MESSAGES)  # recognised by content


def test_command_rs_gguf_template_renders_what_llama_cpps_command_r_renders(command_r):
    turns = [*MESSAGES, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    assert chat.load(command_r).render(turns) == chat.apply_template("command-r", turns)


def test_a_real_templates_raise_exception_reaches_the_caller(command_r):
    turns = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError) as raised:
        chat.load(command_r).render(turns)
    assert str(raised.value) == "Conversation roles must alternate user/assistant/user/assistant/..."


def test_the_default_gemma_model_still_renders_with_llama_cpps_gemma_template(gemma):
    template = chat.load(gemma)
    assert gemma.chat_template() is None and template.builtin_name == "gemma" and template.source is None
    assert template.render(MESSAGES) == chat.apply_template("gemma", MESSAGES)
    assert template.render(MESSAGES).endswith("<start_of_turn>model\n")


def test_a_model_variant_or_a_builtin_can_be_named(command_r):
    assert chat.load(command_r, "rag").source == command_r.chat_template("rag")
    assert chat.load(command_r, "chatml").builtin_name == "chatml"


def test_an_unknown_name_lists_the_builtins_and_the_models_variants(command_r):
    with pytest.raises(ChatTemplateError, match=r"unknown chat template 'chatmll'.*chatml.*\(rag, tool_use\)"):
        chat.load(command_r, "chatmll")


def test_every_template_llama_cpp_ships_compiles_and_renders_or_says_why():
    rendered, refused = 0, 0
    for path in sorted((VOCAB_MODELS / "templates").glob("*.jinja")):
        template = ChatTemplate.jinja(path.read_text(), bos_token="<s>", eos_token="</s>")
        try:
            text = template.render(TOOL_TURNS, tools=[WEATHER])
        except ChatTemplateError:
            refused += 1  # the template's own check (e.g. Mistral's 9-character call ids), or the sandbox
            continue
        rendered += 1
        assert "18 C" in text, path.name
        # The call's arguments neither encoded twice nor shown as a Python dict.
        assert '\\"city\\": \\"Paris\\"' not in text and "{'city': 'Paris'}" not in text, path.name
    # 4 when written: Kimi K2's two (list.append), Command R+'s tool_use (Cohere's tool shape), and
    # firefunction v2's (a `functions` variable of its own).
    assert rendered >= 60 and refused <= 6


# --- the server and the command line --------------------------------------------------------


def test_a_template_that_raises_is_a_400_with_its_message(gemma):
    state = ServerState(
        model_id="m",
        model=gemma,
        engine=SimpleNamespace(n_ctx_per_seq=512),
        chat_template="{{ raise_exception('Only user messages, please') }}",
    )
    client = TestClient(build_app(state), raise_server_exceptions=False)
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Only user messages, please"
    assert r.json()["error"]["param"] == "messages"


def test_continue_final_message_leaves_the_last_turn_open_over_http(gemma):
    state = ServerState(model_id="m", model=gemma, engine=SimpleNamespace(n_ctx_per_seq=512), chat_template=CHATML)
    client = TestClient(build_app(state), raise_server_exceptions=False)
    body = {"messages": PREFILL, "continue_final_message": True}
    assert client.post("/apply-template", json=body).json()["prompt"].endswith("<|im_start|>assistant\nHi there,")
    # Without it the turn is closed and a new one opened, as OpenAI's API does.
    closed = client.post("/apply-template", json={"messages": PREFILL}).json()["prompt"]
    assert closed.endswith("Hi there,<|im_end|>\n<|im_start|>assistant\n")
    refused = client.post("/apply-template", json={"messages": MESSAGES, "continue_final_message": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "continue_final_message"


def test_a_template_file_is_read_and_checked(tmp_path, gemma):
    good = tmp_path / "chatml.jinja"
    good.write_text(CHATML)
    assert chat.load(gemma, chat.read_template_file(good)).render(MESSAGES) == render(CHATML)
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}\n{{ m.content }")
    with pytest.raises(
        ChatTemplateError, match=rf"chat template file {broken}: the chat template does not parse: line 2"
    ):
        chat.read_template_file(broken)
    with pytest.raises(ChatTemplateError, match="cannot read chat template file"):
        chat.read_template_file(tmp_path / "missing.jinja")


@pytest.mark.parametrize("command", ["generate", "serve"])
def test_a_broken_template_file_is_a_one_line_error_at_start_up(tmp_path, command):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ messages[0].content }")
    args = [command, "--chat-template-file", str(broken)]
    if command == "generate":
        args += ["--prompt", "hi", "--chat"]
    result = subprocess.run([sys.executable, "-m", "helios_cli", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"helios-engine: chat template file {broken}: the chat template does not parse")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_chat_template_and_chat_template_file_exclude_each_other():
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--chat-template", "chatml", "--chat-template-file", "t.jinja"])
    assert exited.value.code == 2
