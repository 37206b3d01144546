"""The Starlette app around a scripted engine: states and failures a real model rarely shows on cue."""

from __future__ import annotations

import threading

import pytest
from starlette.testclient import TestClient

from helios_core.engine import Done
from helios_core.errors import HeliosError
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_core.sequence import Step, Usage
from helios_http.app import ServerState, build_app


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

    def __init__(self, events):
        self.events = events

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
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 2}}
