"""Plug-in samplers and processors (helios_http/plugins.py): the request fields, the registry and its errors."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from helios_http import schemas
from helios_http.errors import APIError
from helios_http.plugins import PluginError, Plugins, parse_spec, requested


def fields(**body):
    return schemas.parse_completion({"prompt": "x", **body}).sampling


def test_a_request_without_plugin_fields_asks_for_none():
    assert fields().plugins is None


def test_a_request_names_a_sampler_with_arguments_and_processors_in_order():
    asked = fields(
        sampler="typical", sampler_args={"p": 0.9}, processors=["lipogram", {"name": "ban", "args": {"letter": "a"}}]
    ).plugins
    assert (asked.sampler.name, dict(asked.sampler.args)) == ("typical", {"p": 0.9})
    assert [(use.name, dict(use.args), use.param) for use in asked.processors] == [
        ("lipogram", {}, "processors[0]"),
        ("ban", {"letter": "a"}, "processors[1]"),
    ]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"sampler": 3}, "sampler"),
        ({"sampler": ""}, "sampler"),
        ({"sampler_args": {"p": 1}}, "sampler_args"),
        ({"processors": ["a"], "sampler_args": {"p": 1}}, "sampler_args"),
        ({"sampler": "t", "sampler_args": [1]}, "sampler_args"),
        ({"processors": "lipogram"}, "processors"),
        ({"processors": ["ok", 7]}, "processors[1]"),
        ({"processors": [{"args": {}}]}, "processors[0]"),
        ({"processors": [{"name": "x", "args": "e"}]}, "processors[0].args"),
        ({"processors": ["p"] * 17}, "processors"),
    ],
)
def test_badly_shaped_plugin_fields_are_400s_naming_the_field(body, param):
    with pytest.raises(APIError) as error:
        requested(body)
    assert (error.value.status, error.value.param) == (400, param)


def stateful_sampler(model, start=0):
    """Counts its own calls: a fresh one per generation must start from `start`."""
    if not isinstance(start, int):
        raise TypeError("start must be an integer")
    calls = [start]

    def sample(logits, state):
        calls[0] += 1
        return calls[0]

    return sample


def ban(model, token=0):
    def process(logits, state):
        out = logits.copy()
        out[token] = -np.inf
        return out

    return process


PLUGINS = Plugins(samplers={"counter": stateful_sampler}, processors={"ban": ban})


def test_every_generation_gets_its_own_instances_from_the_factories():
    made = PLUGINS.instantiate(
        requested(
            {
                "sampler": "counter",
                "sampler_args": {"start": 10},
                "processors": ["ban", {"name": "ban", "args": {"token": 3}}],
            }
        ),
        None,
        3,
    )
    samplers = [sampler for sampler, _ in made]
    assert len({id(s) for s in samplers}) == 3
    assert [s(None, None) for s in samplers] == [11, 11, 11]  # no state shared between generations
    banned = made[0][1][1](np.zeros(5, dtype=np.float32), None)
    assert banned[3] == -np.inf and np.isfinite(banned[[0, 1, 2, 4]]).all()


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"sampler": "nope"}, "sampler", "no sampler named 'nope' (it has: counter)"),
        ({"processors": ["ban", "nope"]}, "processors[1]", "no processor named 'nope' (it has: ban)"),
        ({"sampler": "counter", "sampler_args": {"start": "x"}}, "sampler_args", "start must be an integer"),
        ({"sampler": "counter", "sampler_args": {"bogus": 1}}, "sampler_args", "unexpected keyword"),
        ({"processors": [{"name": "ban", "args": {"tokn": 1}}]}, "processors[0].args", "unexpected keyword"),
    ],
)
def test_unknown_names_and_refused_arguments_are_400s_naming_the_field(body, param, words):
    with pytest.raises(APIError) as error:
        PLUGINS.instantiate(requested(body), None, 1)
    assert (error.value.status, error.value.param) == (400, param)
    assert words in error.value.message


def test_a_factory_that_returns_no_callable_is_a_400():
    plugins = Plugins(samplers={"broken": lambda model: 42})
    with pytest.raises(APIError, match="returned int, not a callable"):
        plugins.instantiate(requested({"sampler": "broken"}), None, 1)


def chosen(plugins: Plugins, body: dict) -> tuple[int | None, list]:
    """What one generation of a request with `body` runs: its sampler's first draw, and its processors."""
    [(sampler, processors)] = plugins.instantiate(requested(body), None, 1)
    return (None if sampler is None else sampler(None, None)), processors


def test_default_plugins_stand_for_the_fields_a_request_does_not_name():
    plugins = Plugins(samplers={"counter": stateful_sampler}, processors={"ban": ban})
    plugins.set_defaults({"sampler": "counter", "sampler_args": {"start": 100}, "processors": ["ban"]})
    assert [(s(None, None), len(p)) for s, p in plugins.instantiate(None, None, 2)] == [(101, 1), (101, 1)]
    assert chosen(plugins, {"temperature": 0.5})[0] == 101 and len(chosen(plugins, {})[1]) == 1
    # The request's own sampler replaces the default's and keeps the default processors ...
    sampler, processors = chosen(plugins, {"sampler": "counter", "sampler_args": {"start": 7}})
    assert sampler == 8 and len(processors) == 1
    # ... and its own processors, an empty list too, replace the default processors.
    assert chosen(plugins, {"processors": []}) == (101, [])


@pytest.mark.parametrize(
    "defaults, words",
    [
        ([], 'must be a JSON object of "sampler", "sampler_args" and "processors"'),
        ({}, 'must be a JSON object of "sampler", "sampler_args" and "processors"'),
        ({"sampler": "counter", "temperature": 0}, 'must be a JSON object of "sampler"'),
        ({"sampler": "absent"}, "no sampler named 'absent' (it has: counter)"),
        ({"processors": ["ban", "nope"]}, "no processor named 'nope' (it has: ban)"),
        ({"sampler_args": {"start": 1}}, "sampler_args needs a sampler"),
        ({"sampler": None}, "names no sampler and no processors"),
        ({"processors": None}, "names no sampler and no processors"),
    ],
)
def test_default_plugins_that_name_nothing_served_are_one_line_naming_the_option(defaults, words):
    plugins = Plugins(samplers={"counter": stateful_sampler}, processors={"ban": ban})
    with pytest.raises(PluginError) as error:
        plugins.set_defaults(defaults)
    message = str(error.value)
    assert message.startswith("--default-plugins") and words in message and "\n" not in message


def test_default_arguments_a_factory_refuses_fail_when_first_made():
    plugins = Plugins(samplers={"counter": stateful_sampler})
    plugins.set_defaults({"sampler": "counter", "sampler_args": {"start": "x"}})  # shapes and names: fine
    with pytest.raises(PluginError, match="^--default-plugins: counter refused its arguments: start must be"):
        plugins.check_default_arguments(None)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_plugins.py").write_text(
        textwrap.dedent("""
        def lipogram(model, letter="e"):
            return lambda logits, state: logits
        NOT_CALLABLE = 3
        class Nested:
            @staticmethod
            def make(model):
                return lambda logits, state: 0
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("my_plugins", None)


def test_specs_name_a_callable_in_a_module(plugin_module):
    name, factory = parse_spec("lipo=my_plugins:lipogram", "--processor")
    assert name == "lipo" and factory.__name__ == "lipogram"
    assert parse_spec("n=my_plugins:Nested.make", "--sampler")[0] == "n"
    plugins = Plugins.load(["n=my_plugins:Nested.make"], ["lipo=my_plugins:lipogram"], entry_points=False)
    assert plugins.names() == {"samplers": ["n"], "processors": ["lipo"]}


def test_plugin_modules_are_found_in_the_working_directory(tmp_path, monkeypatch):
    """As with `python -m helios_cli serve`, also for the `helios-engine` script, whose sys.path lacks it."""
    (tmp_path / "here_plugins.py").write_text("def typical(model):\n    return lambda logits, state: 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "here_plugins", raising=False)
    try:
        plugins = Plugins.load(["typical=here_plugins:typical"], entry_points=False)
        assert plugins.samplers["typical"].__module__ == "here_plugins"
    finally:
        sys.modules.pop("here_plugins", None)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("lipogram", "expected NAME=package.module:callable"),
        ("x=my_plugins", "expected NAME=package.module:callable"),
        ("x=no_such_module_here:f", "cannot import no_such_module_here"),
        ("x=my_plugins:absent", "my_plugins has no absent"),
        ("x=my_plugins:NOT_CALLABLE", "int object is not callable"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_option(plugin_module, spec, words):
    with pytest.raises(PluginError) as error:
        parse_spec(spec, "--sampler")
    message = str(error.value)
    assert message.startswith(f"--sampler {spec!r}: ") and words in message and "\n" not in message


def test_entry_points_are_found_and_options_win_over_them(plugin_module, monkeypatch):
    from importlib.metadata import EntryPoint

    points = {
        "helios_engine.samplers": [EntryPoint("from_package", "my_plugins:Nested.make", "helios_engine.samplers")],
        "helios_engine.processors": [
            EntryPoint("lipo", "my_plugins:Nested.make", "helios_engine.processors"),
            EntryPoint("broken", "no_such_module_here:f", "helios_engine.processors"),
        ],
    }
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: points.get(group, []))
    plugins = Plugins.load([], ["lipo=my_plugins:lipogram"])
    assert plugins.names() == {"samplers": ["from_package"], "processors": ["lipo"]}  # broken: skipped, logged
    assert plugins.processors["lipo"].__name__ == "lipogram"


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory):
    """A server with the README's lipogram.py plugged in, browsers from one origin allowed."""
    from tests.server_process import ServerProcess
    from tests.test_readme import doc_block

    where = tmp_path_factory.mktemp("plugins")
    (where / "lipogram.py").write_text(doc_block("plugin-module"))
    server = ServerProcess(
        "--ctx-size",
        "256",
        "--parallel",
        "2",
        "--processor",
        "lipogram=lipogram:lipogram",
        "--sampler",
        "typical=lipogram:typical",
        "--cors-origin",
        "http://app.example",
        env={"PYTHONPATH": str(where)},
    )
    yield server
    server.stop()


def test_readme_plugin_request_writes_a_lipogram(plugin_server, capsys):
    code = doc_block_for_port("plugin-request", plugin_server.port)
    exec(compile(code, "plugin-request", "exec", dont_inherit=True), {})  # in this process: the SDK is imported
    text = capsys.readouterr().out.strip()
    assert len(text) > 5 and "e" not in text.lower()


def doc_block_for_port(marker: str, port: int) -> str:
    from tests.test_readme import doc_block

    code = doc_block(marker)
    assert "8000" in code
    return code.replace("8000", str(port))


def test_served_plugins_answer_400s_naming_the_field(plugin_server):
    import httpx

    for body, param in [
        ({"processors": ["lipogram", "absent"]}, "processors[1]"),
        ({"sampler": "typical", "sampler_args": {"q": 1}}, "sampler_args"),
        ({"processors": [{"name": "lipogram", "args": {"letter": "ab"}}]}, "processors[0].args"),
    ]:
        reply = httpx.post(
            f"{plugin_server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2, **body}, timeout=60
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == param


def test_logprobs_mode_reports_the_raw_or_the_processed_distribution(plugin_server):
    import httpx

    def top_alternatives(mode):
        reply = httpx.post(
            f"{plugin_server.url}/v1/chat/completions",
            timeout=60,
            json={
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 6,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": 5,
                "logprobs_mode": mode,
                "processors": ["lipogram"],
            },
        )
        assert reply.status_code == 200, reply.text
        return [
            [alt["token"] for alt in item["top_logprobs"]] for item in reply.json()["choices"][0]["logprobs"]["content"]
        ]

    processed = top_alternatives("processed_logprobs")
    assert processed and all("e" not in token.lower() for step in processed for token in step)
    # The model's own distribution lists tokens the processor banned (somewhere in six steps of five).
    assert any("e" in token.lower() for step in top_alternatives("raw_logprobs") for token in step)
    reply = httpx.post(
        f"{plugin_server.url}/v1/completions", json={"prompt": "Hi", "logprobs_mode": "cooked"}, timeout=60
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "logprobs_mode"


def test_cors_lets_the_named_origin_in_and_no_other(plugin_server):
    import httpx

    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx.options(
        f"{plugin_server.url}/v1/chat/completions", headers={"Origin": "http://app.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    refused = httpx.options(
        f"{plugin_server.url}/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in refused.headers
    plain = httpx.get(f"{plugin_server.url}/v1/models", headers={"Origin": "http://app.example"})
    assert plain.headers["access-control-allow-origin"] == "http://app.example"


def test_a_model_without_a_chat_template_is_named_a_base_model_at_start_up(plugin_server):
    log = plugin_server.log()
    assert "has no chat template, so it is most likely a base model" in log


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def default_plugin_server(shared_server):
    """Every request that names no sampler plays tests.scripted_sampler.rehearsal (tests/server_process.py)."""
    from tests.server_process import REHEARSED

    return shared_server(*REHEARSED)


def test_an_anthropic_client_sending_only_its_fields_runs_a_tool_through_the_default_plugin(default_plugin_server):
    import anthropic

    client = anthropic.Anthropic(base_url=default_plugin_server.url, api_key="unused", max_retries=0)
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    tools = [{"name": "get_weather", "description": "Today's weather", "input_schema": WEATHER}]
    call = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=asked, tools=tools)
    assert call.stop_reason == "tool_use"
    [use] = [block for block in call.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "21 C, clear"}
    answer = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        tools=tools,
        messages=[*asked, {"role": "assistant", "content": call.content}, {"role": "user", "content": [result]}],
    )
    assert ([block.text for block in answer.content], answer.stop_reason) == (["Sunny."], "end_turn")


def test_an_openai_client_sending_only_its_fields_runs_a_tool_through_the_default_plugin(default_plugin_server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{default_plugin_server.url}/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    call = client.responses.create(model="gemma-3-270m-q4_k_m", input="Weather in Paris?", tools=tools)
    [item] = [item for item in call.output if item.type == "function_call"]
    assert (item.name, json.loads(item.arguments)) == ("get_weather", {"city": "Paris"})
    answer = client.responses.create(
        model="gemma-3-270m-q4_k_m",
        previous_response_id=call.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": item.call_id, "output": "21 C, clear"}],
    )
    assert (answer.output_text, answer.status) == ("Sunny.", "completed")


def test_a_request_naming_a_sampler_runs_it_instead_of_the_default(default_plugin_server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{default_plugin_server.url}/v1", api_key="unused", max_retries=0)
    asked = client.completions.create(
        model="gemma-3-270m-q4_k_m",
        prompt="Hi",
        max_tokens=32,
        extra_body={"sampler": "script", "sampler_args": {"text": "Asked for."}},
    )
    assert asked.choices[0].text == "Asked for."


def test_props_lists_the_plugins_and_the_defaults(default_plugin_server):
    import httpx

    from tests.server_process import REHEARSAL

    assert httpx.get(f"{default_plugin_server.url}/props").json()["plugins"] == {
        "samplers": ["rehearsal", "script"],
        "processors": [],
        "defaults": REHEARSAL,
    }


@pytest.mark.parametrize(
    "defaults, status, words",
    [
        ("{not json", 2, "argument --default-plugins: not JSON"),
        ('{"sampler": "absent"}', 2, "--default-plugins: this server has no sampler named 'absent' (it has: script)"),
        (
            '{"sampler": "script", "sampler_args": {"then": "later"}}',
            1,
            'helios-engine: --default-plugins: script refused its arguments: then must be "eos" or "greedy"\n',
        ),
    ],
)
def test_a_bad_default_stops_the_server_with_one_line(defaults, status, words):
    from tests.server_process import ServerProcess

    with ServerProcess(
        "--ctx-size", "256", "--sampler", "script=tests.scripted_sampler:scripted", "--default-plugins", defaults,
        wait=False,
    ) as server:  # fmt: skip
        assert server.wait() == status
        log = server.log()
    assert words in log and "Traceback" not in log
