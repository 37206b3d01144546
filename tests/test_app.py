"""The Starlette app around a scripted engine: states and failures a real model rarely shows on cue."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import orjson
import pytest
from starlette.testclient import TestClient

from helios_core.engine import Done, EngineShutdownError, SchedulerStats
from helios_core.errors import HeliosError
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_core.sequence import Step, Usage
from helios_http.app import build_app
from helios_http.state import ServerState


class ScriptedRequest:
    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class ScriptedEngine:
    """Plays a fixed list of events to each request's sink, from its own thread like the real engine."""

    n_ctx_per_seq = 512
    max_queue = 64
    n_slots = 1
    busy_slots = 0
    queued = 0

    thread_id = None  # no engine thread: the bridge hands each event on as it arrives

    def __init__(self, events):
        self.events = events
        self.scheduler = SimpleNamespace(stats=SchedulerStats())  # what /metrics reads

    def add_step_listener(self, listener) -> None:
        pass  # no steps to end

    def submit(self, prompt, params, sink):
        threading.Thread(target=lambda: [sink(e) for e in self.events], daemon=True).start()
        return ScriptedRequest()


@pytest.fixture(scope="module")
def vocab_model():
    with Model(default_model_path(), vocab_only=True) as m:
        yield m


def client_for(state: ServerState) -> TestClient:
    return TestClient(build_app(state), raise_server_exceptions=False)


def test_health_is_503_while_the_model_loads():
    client = client_for(ServerState(model_id="m"))
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "model_loading" and r.headers["Retry-After"] == "1"
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"


def test_the_root_answers_get_and_head_without_a_key_saying_what_it_serves():
    client = client_for(ServerState(model_id="m", api_key="secret"))
    assert client.head("/").status_code == 200  # Claude Code probes the base URL so
    r = client.get("/")
    assert r.status_code == 200 and r.json() == {
        "server": "helios-engine",
        "model": "m",
        "ready": False,
        "health": "/health",
    }


def test_health_says_why_the_model_failed_to_load():
    r = client_for(ServerState(model_id="m", load_error="not a GGUF file")).get("/health")
    assert r.status_code == 503 and "not a GGUF file" in r.json()["error"]["message"]


def test_an_error_mid_stream_ends_the_stream_with_an_error_event_and_done(vocab_model):
    engine = ScriptedEngine([Step(5, "Hello"), Step(6, " world"), Done(None, HeliosError("the KV cache broke"))])
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=engine))
    with client.stream("POST", "/v1/completions", json={"prompt": "x", "stream": True}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert '"text":"Hello"' in lines[0] and '"text":" world"' in lines[1]
    assert lines[2].startswith('data: {"error":') and "the KV cache broke" in lines[2]
    assert lines[-1] == "data: [DONE]"


def test_an_engine_error_without_streaming_is_a_500_without_a_traceback(vocab_model):
    engine = ScriptedEngine([Done(None, HeliosError("the KV cache broke"))])
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=engine))
    r = client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "Traceback" not in r.text


def test_usage_counts_each_prompt_once_and_every_choice(vocab_model):
    usage = Usage(prompt_tokens=7, cached_tokens=2, completion_tokens=1)
    engine = ScriptedEngine([Step(5, "a", finish_reason="length"), Done("length", usage=usage)])
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=engine))
    body = client.post("/v1/completions", json={"prompt": "x", "n": 3, "max_tokens": 1}).json()
    assert [c["text"] for c in body["choices"]] == ["a", "a", "a"]
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


# --- request fields (issue 8, section 4) -------------------------------------------------


class RecordingEngine(ScriptedEngine):
    """A ScriptedEngine that keeps the params of every submission."""

    def __init__(self, events):
        super().__init__(events)
        self.submitted = []

    def submit(self, prompt, params, sink):
        self.submitted.append((prompt, params))
        return super().submit(prompt, params, sink)


@pytest.fixture
def recorded(vocab_model):
    engine = RecordingEngine([Step(5, "a", finish_reason="length"), Done("length", usage=Usage(1, 0, 1))])
    return engine, client_for(ServerState(model_id="m", model=vocab_model, engine=engine))


HELLO = [{"role": "user", "content": "hi"}]


def test_a_null_max_completion_tokens_falls_back_to_max_tokens(recorded):
    engine, client = recorded
    r = client.post("/v1/chat/completions", json={"messages": HELLO, "max_completion_tokens": None, "max_tokens": 3})
    assert r.status_code == 200
    assert engine.submitted[-1][1].max_tokens == 3


@pytest.mark.parametrize("max_tokens", [0, -1])
def test_max_tokens_below_one_is_refused_behind_a_null_max_completion_tokens(recorded, max_tokens):
    engine, client = recorded
    r = client.post(
        "/v1/chat/completions", json={"messages": HELLO, "max_completion_tokens": None, "max_tokens": max_tokens}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert engine.submitted == []


@pytest.mark.parametrize(
    "content", ["a\u0000 tail", [{"type": "text", "text": "fine"}, {"type": "text", "text": "a\u0000 tail"}]]
)
def test_a_nul_in_chat_content_is_refused_naming_the_message(recorded, content):
    engine, client = recorded
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    r = client.post("/v1/chat/completions", json={"messages": messages})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "messages[1].content" and "NUL" in error["message"]
    assert engine.submitted == []


@pytest.mark.parametrize("prompt", [[[True, True]], [True], [[1, True]], [[1], [False]]])
def test_json_booleans_are_not_token_ids(recorded, prompt):
    engine, client = recorded
    r = client.post("/v1/completions", json={"prompt": prompt})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert engine.submitted == []


def test_one_request_asks_for_at_most_16_generations(recorded):
    engine, client = recorded
    r = client.post("/v1/completions", json={"prompt": ["x"] * 64, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = client.post("/v1/completions", json={"prompt": ["x"] * 4, "n": 5, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "20 generations" in r.text
    assert engine.submitted == []
    r = client.post("/v1/completions", json={"prompt": ["x"] * 4, "n": 4, "max_tokens": 1})
    assert r.status_code == 200 and len(r.json()["choices"]) == 16


class TextOnlyVocab:
    """A vocabulary that refuses to tokenize: proves a prompt was judged by its length alone."""

    n_vocab = 1000
    max_token_bytes = 4

    def tokenize(self, *args, **kwargs):
        raise AssertionError("the prompt was tokenized")


class TextOnlyModel:
    vocab = TextOnlyVocab()


def test_a_prompt_longer_than_a_slot_by_its_bytes_is_refused_without_tokenizing():
    engine = RecordingEngine([])  # n_ctx_per_seq = 512: 4 * 512 bytes are at least 512 tokens
    client = client_for(ServerState(model_id="m", model=TextOnlyModel(), engine=engine))
    r = client.post("/v1/completions", json={"prompt": "abcd" * 512})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "at least 512 tokens (2048 bytes of text)" in error["message"] and "holds 512" in error["message"]
    assert engine.submitted == []


# --- shutdown (issue 8, section 5) -------------------------------------------------------


class ShutDownEngine(ScriptedEngine):
    def submit(self, prompt, params, sink):
        raise EngineShutdownError("the server is shutting down and takes no new requests")


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_refused_at_shutdown_is_a_503(vocab_model, stream):
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=ShutDownEngine([])))
    r = client.post("/v1/completions", json={"prompt": "x", "stream": stream})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable" and r.json()["error"]["code"] == "shutting_down"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_ended_while_queued_at_shutdown_is_a_503_not_a_stream(vocab_model, stream):
    engine = ScriptedEngine([Done(None, EngineShutdownError("the request was still waiting for a slot"))])
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=engine))
    r = client.post("/v1/chat/completions", json={"messages": HELLO, "stream": stream})
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"


def test_a_whole_response_ended_by_shutdown_is_a_503(vocab_model):
    engine = ScriptedEngine([Step(5, "Hello"), Done(None, EngineShutdownError("the request was not finished"))])
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=engine))
    r = client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    assert r.headers["connection"] == "close"


def test_a_stream_ended_by_shutdown_gets_the_error_event_and_done(vocab_model):
    engine = ScriptedEngine([Step(5, "Hello"), Done(None, EngineShutdownError("the request was not finished"))])
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=engine))
    with client.stream("POST", "/v1/completions", json={"prompt": "x", "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    error = orjson.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "shutting_down"
    assert lines[-1] == "data: [DONE]"


def test_while_draining_requests_get_503_but_metrics_stay_readable(vocab_model):
    state = ServerState(model_id="m", model=vocab_model, engine=ScriptedEngine([]), draining=True)
    client = client_for(state)
    for r in (client.get("/health"), client.post("/v1/completions", json={"prompt": "x"})):
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert r.headers["connection"] == "close"
    assert client.get("/metrics").status_code == 200


# --- auth (issue 8, section 6) -------------------------------------------------------------


@pytest.fixture
def keyed(vocab_model):
    return client_for(ServerState(model_id="m", api_key="sesame", model=vocab_model, engine=ScriptedEngine([])))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(keyed, scheme):
    assert keyed.get("/v1/models", headers={"Authorization": f"{scheme} sesame"}).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic sesame", "Bearer", "sesame", "Bearer sesame2"])
def test_a_missing_or_wrong_key_is_401_with_www_authenticate(keyed, header):
    r = keyed.get("/v1/models", headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    error = r.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"


@pytest.mark.parametrize("order", [("sesame", "wrong"), ("wrong", "sesame"), ("sesame", "sesame")])
def test_two_authorization_headers_are_refused(keyed, order):
    headers = [("Authorization", f"Bearer {key}") for key in order]
    r = keyed.get("/v1/models", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_authorization_header"


def test_metrics_need_the_key_unless_public(vocab_model, keyed):
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert keyed.get("/health").status_code == 200
    public = client_for(
        ServerState(model_id="m", api_key="sesame", metrics_public=True, model=vocab_model, engine=ScriptedEngine([]))
    )
    assert public.get("/metrics").status_code == 200
    assert public.get("/v1/models").status_code == 401


def test_without_a_key_authorization_headers_are_ignored(vocab_model):
    client = client_for(ServerState(model_id="m", model=vocab_model, engine=ScriptedEngine([])))
    r = client.get("/v1/models", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
    assert r.status_code == 200


def test_refusals_are_counted_in_metrics(keyed):
    keyed.get("/v1/models")
    text = keyed.get("/metrics", headers={"Authorization": "Bearer sesame"}).text
    assert 'helios_requests_total{path="/v1/models",status="401"} 1' in text


def test_a_body_declared_over_the_limit_is_413_before_the_handler_runs(recorded):
    engine, _ = recorded
    client = client_for(ServerState(model_id="m", model=TextOnlyModel(), engine=engine, max_body_bytes=1000))
    r = client.post("/v1/completions", content=b'{"prompt": "' + b"x" * 2000 + b'"}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert r.headers["connection"] == "close"
    assert engine.submitted == []


def test_llama_server_sampler_fields_reach_the_generation(recorded):
    engine, client = recorded
    fields = {
        "typical_p": 0.9,
        "top_n_sigma": 1.5,
        "xtc_threshold": 0.2,
        "xtc_probability": 0.5,
        "mirostat": 2,
        "mirostat_tau": 4.0,
        "mirostat_eta": 0.2,
        "dry_multiplier": 0.8,
        "dry_base": 2.0,
        "dry_allowed_length": 3,
        "dry_penalty_last_n": 128,
        "dry_sequence_breakers": ["\n", "."],
        "min_tokens": 4,
        "ignore_eos": True,
        "stop_token_ids": [7, 9],
    }
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3, **fields})
    assert r.status_code == 200, r.text
    params = engine.submitted[-1][1]
    assert {name: getattr(params, name) for name in fields} == {
        **fields,
        "dry_sequence_breakers": ("\n", "."),
        "stop_token_ids": (7, 9),
    }


@pytest.mark.parametrize(
    "field, value",
    [
        ("typical_p", 0),
        ("typical_p", 1.5),
        ("mirostat", 1),
        ("mirostat", 3),
        ("dry_base", 0.5),
        ("dry_allowed_length", -1),
        ("dry_sequence_breakers", "\n"),
        ("dry_sequence_breakers", [""]),
        ("xtc_probability", 2),
        ("min_tokens", -1),
        ("ignore_eos", "yes"),
        ("stop_token_ids", [300_000]),
        ("stop_token_ids", 7),
    ],
)
def test_bad_sampler_fields_are_400s_naming_them(recorded, field, value):
    engine, client = recorded
    r = client.post("/v1/chat/completions", json={"messages": HELLO, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert engine.submitted == []


def test_a_model_is_retrieved_by_its_id_and_an_unknown_one_is_a_404(vocab_model):
    client = client_for(ServerState(model_id="owner/repo:file.gguf", model=vocab_model, engine=ScriptedEngine([])))
    r = client.get("/v1/models/owner/repo:file.gguf")
    assert r.status_code == 200 and r.json()["id"] == "owner/repo:file.gguf" and r.json()["object"] == "model"
    r = client.get("/v1/models/gpt-4")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
