"""helios-engine serve, spoken to by the official openai SDK and by httpx, over real loopback HTTP."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import openai
import pytest

from helios_core.model import Model
from helios_core.resolve import default_model_path
from tests.conftest import PATIENCE
from tests.server_process import KEYED, PLAIN, ServerProcess, metric, wait_until

CTX = 1024  # PLAIN's --ctx-size
# Seconds after which waiting for the server counts as a failure: a bound, never a speed claim. On a
# 2-core machine shared with other llama.cpp processes, a 6-token request has been seen to take 13 s.
# max_tokens of the runs that a client abandons: with end-of-generation tokens
# banned and CTX leaving room, only this or a cancel can end them, and a whole
# run takes seconds on any CPU, against a handful of tokens once a client leaves.
LONG = 900


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*PLAIN)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def vocab():
    with Model(default_model_path(), vocab_only=True) as m:
        yield m.vocab


def wait_until_idle(server) -> None:
    wait_until(
        lambda: metric(server.url, "slots_busy") == 0 and metric(server.url, "requests_queued") == 0,
        "the server to go idle",
    )


def same_cache_state(server, make_request):
    """Run a request once on an idle server, so that runs compared after it start from the same cache.

    llama.cpp's CPU kernels give other floats for other batch shapes, so a greedy
    (or seeded) continuation can change with how much of its prompt was cached
    or with what else shared its decodes. After this warm-up every run of the
    same prompt goes to the slot that holds all of it (the prompt must be unique
    to its test, so that no other slot holds it too), re-decodes only its last
    token, alone, and generates alone: the same batch shapes every time. Tests
    check this with `all_but_one_cached`.
    """
    wait_until_idle(server)
    make_request()


def all_but_one_cached(usage) -> bool:
    return usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1


# --- the openai SDK -------------------------------------------------------------------------


def test_chat_completion(client, server, no_eog):
    r = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0, logit_bias=no_eog
    )
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert r.model == "gemma-3-270m-q4_k_m"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_content_as_text_parts_equals_plain_string(client, server):
    def ask(content):
        return client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": content}], max_tokens=6, temperature=0
        )

    same_cache_state(server, lambda: ask("Hello there"))
    plain = ask("Hello there")
    parts = ask([{"type": "text", "text": "Hello there"}])
    # The same prompt tokens: the parts request found all but the last of them cached by the plain one.
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens
    assert all_but_one_cached(plain.usage) and all_but_one_cached(parts.usage)
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_chat_stream_chunks_concatenate_to_the_message_and_carry_usage(client, server):
    kwargs = dict(model="m", messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, temperature=0)
    same_cache_state(server, lambda: client.chat.completions.create(**kwargs))
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert all_but_one_cached(whole.usage) and all_but_one_cached(chunks[-1].usage)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_completion_with_stop_string(client, server, no_eog):
    kwargs = dict(model="m", prompt="The three primary colors are", max_tokens=20, temperature=0, logit_bias=no_eog)
    same_cache_state(server, lambda: client.completions.create(**kwargs))
    free = client.completions.create(**kwargs)
    assert "," in free.choices[0].text  # the unstopped run writes the stop string
    stopped = client.completions.create(**kwargs, stop=[","])
    assert all_but_one_cached(free.usage) and all_but_one_cached(stopped.usage)
    assert stopped.choices[0].text == free.choices[0].text.split(",")[0]
    assert stopped.choices[0].finish_reason == "stop"


def test_completion_stream_equals_non_stream(client, server):
    kwargs = dict(model="m", prompt="Once upon a time, far away", max_tokens=12, temperature=0)
    same_cache_state(server, lambda: client.completions.create(**kwargs))
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert all_but_one_cached(whole.usage) and all_but_one_cached(chunks[-1].usage)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_max_tokens_gives_length(client, no_eog):
    r = client.completions.create(model="m", prompt="Once upon a time", max_tokens=3, temperature=0, logit_bias=no_eog)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_usage_counts_match_the_tokenizer(client, vocab, no_eog):
    prompt = "Tell me about the moon"
    r = client.completions.create(model="m", prompt=prompt, max_tokens=5, temperature=0, logit_bias=no_eog)
    assert r.usage.prompt_tokens == len(vocab.tokenize(prompt))
    assert r.usage.completion_tokens == 5
    assert len(vocab.tokenize(r.choices[0].text, add_special=False)) <= 5 + 1


def test_cached_tokens_are_reported(client, server):
    wait_until_idle(server)  # a busy slot would send the second request to the other one
    prompt = "A long shared preamble about the history of mathematics and its many branches. " * 4
    client.completions.create(model="m", prompt=prompt + "First", max_tokens=2, temperature=0)
    r = client.completions.create(model="m", prompt=prompt + "Second", max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens_details.cached_tokens > 40


def test_n_choices(client, no_eog):
    kwargs = dict(
        model="m",
        messages=[{"role": "user", "content": "Pick a number."}],
        max_tokens=6,
        temperature=1.0,
        seed=3,
        logit_bias=no_eog,
    )  # every choice then runs to max_tokens
    r = client.chat.completions.create(**kwargs, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content and c.finish_reason == "length" for c in r.choices)
    # Both choices' tokens are counted; the shared prompt only once.
    single = client.chat.completions.create(**kwargs)
    assert r.usage.prompt_tokens == single.usage.prompt_tokens
    assert (single.usage.completion_tokens, r.usage.completion_tokens) == (6, 12)


def test_n_choices_streamed_carry_their_index(client):
    chunks = list(
        client.completions.create(model="m", prompt="Hello", max_tokens=4, temperature=1.0, seed=1, n=2, stream=True)
    )
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_seed_makes_sampling_reproducible(client, server):
    def run():
        return client.completions.create(
            model="m", prompt="My favourite fruit is", max_tokens=10, temperature=1.0, seed=42
        )

    same_cache_state(server, run)
    first, second = run(), run()
    assert all_but_one_cached(first.usage) and all_but_one_cached(second.usage)
    assert first.choices[0].text == second.choices[0].text


def test_logprobs_in_chat(client):
    r = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = r.choices[0].logprobs.content
    assert len(content) >= 1
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["gemma-3-270m-q4_k_m"]


# --- errors, over httpx ------------------------------------------------------------------


def post(server, path: str, body) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        f"{server.url}{path}", content=data, headers={"Content-Type": "application/json"}, timeout=PATIENCE
    )


CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "path, body, param",
    [
        (CHAT, b"{not json", None),
        (CHAT, b"[1, 2]", None),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {}, "messages"),
        (CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (CHAT, {"messages": HELLO, "temperature": -0.5}, "temperature"),
        (CHAT, {"messages": HELLO, "top_p": 1.5}, "top_p"),
        (CHAT, {"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        (CHAT, {"messages": HELLO, "max_completion_tokens": -3}, "max_completion_tokens"),
        (CHAT, {"messages": HELLO, "n": 0}, "n"),
        (CHAT, {"messages": HELLO, "stop": 7}, "stop"),
        (CHAT, {"messages": HELLO, "logit_bias": {"999999999": 5}}, "logit_bias"),
        (CHAT, {"messages": HELLO, "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": 12}, "prompt"),
        ("/v1/completions", {}, "prompt"),
    ],
)
def test_client_mistakes_are_400s_naming_the_field(server, path, body, param):
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_prompt_longer_than_the_context_says_both_lengths(server):
    r = post(server, "/v1/completions", {"prompt": "word " * (CTX + 100), "max_tokens": 1})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert f"holds {CTX}" in error["message"] and "the prompt has" in error["message"]


def test_unknown_route_and_method_are_openai_shaped(server):
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(f"{server.url}{CHAT}")
    assert r.status_code == 405 and "error" in r.json()


def test_unused_fields_are_ignored(server):
    r = post(server, CHAT, {"messages": HELLO, "max_tokens": 2, "user": "u1", "metadata": {"a": "b"}, "store": False})
    assert r.status_code == 200


def test_health_tokenize_detokenize(server, vocab):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok"
    assert "cpu" in [device["kind"] for device in health["devices"]]  # where the layers may go
    tokens = post(server, "/tokenize", {"content": "Hello world"}).json()["tokens"]
    assert tokens == vocab.tokenize("Hello world", add_special=False)
    assert post(server, "/detokenize", {"tokens": tokens}).json() == {"content": "Hello world", "prompt": "Hello world"}
    pieces = post(server, "/tokenize", {"content": "Hello", "with_pieces": True}).json()["tokens"]
    assert pieces[0]["piece"] == "Hello"
    assert post(server, "/detokenize", {"tokens": [-1]}).status_code == 400


def test_metrics_in_prometheus_format(server, client, no_eog):
    wait_until_idle(server)
    before = metric(server.url, "generated_tokens_total")
    client.completions.create(model="m", prompt="Metrics", max_tokens=2, seed=5, logit_bias=no_eog)
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "requests_total",
        "requests_in_flight",
        "requests_queued",
        "prompt_tokens_total",
        "generated_tokens_total",
        "tokens_per_second",
        "prompt_cache_hits_total",
        "slots_busy",
        "batch_tokens_total",
    ):
        assert f"# TYPE helios_{name} " in text
    assert 'helios_requests_total{path="/v1/completions",status="200"}' in text
    assert metric(server.url, "generated_tokens_total") - before == 2


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server, no_eog):
    wait_until_idle(server)
    before = metric(server.url, "generated_tokens_total")
    body = {
        "prompt": "Write a very long story:",
        "max_tokens": LONG,
        "stream": True,
        "temperature": 0.9,
        "seed": 1,
        "logit_bias": no_eog,
    }
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=PATIENCE) as response:
        assert next(response.iter_lines()).startswith("data: {")  # it is generating; now leave
    wait_until_idle(server)
    generated = metric(server.url, "generated_tokens_total") - before
    assert 1 <= generated < LONG // 2  # cancelled, not run to max_tokens
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert post(server, "/v1/completions", {"prompt": "Still alive?", "max_tokens": 2}).status_code == 200


def test_full_queue_is_429_with_retry_after(no_eog):
    server = ServerProcess("--ctx-size", "2048", "--parallel", "1", "--max-queue", "1")
    try:
        # A stream holds the only slot for as long as this test needs it (2000 tokens, none of them an
        # end of generation); leaving it cancels it.
        body = {"prompt": "Go on and on:", "max_tokens": 2000, "stream": True, "seed": 4, "logit_bias": no_eog}
        waiting = []
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=PATIENCE) as running:
            lines = running.iter_lines()  # kept: dropping the iterator would close the connection
            assert next(lines).startswith("data: {")
            waiter = threading.Thread(
                target=lambda: waiting.append(post(server, "/v1/completions", {"prompt": "Wait:", "max_tokens": 2}))
            )
            waiter.start()
            wait_until(lambda: metric(server.url, "requests_queued") == 1, "the second request to wait for the slot")
            limited = post(server, "/v1/completions", {"prompt": "One too many:", "max_tokens": 2})
        waiter.join()
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
        assert limited.json()["error"]["type"] == "rate_limit_exceeded"
        assert waiting[0].status_code == 200  # the waiting request was served once the slot came free
    finally:
        server.stop()


def test_api_key_is_required_when_set(shared_server):
    server = shared_server(*KEYED)
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sesame", max_retries=0)
    assert sdk.models.list().data[0].id == "gemma-3-270m-q4_k_m"


def test_a_non_streaming_client_that_leaves_stops_its_generation(server, no_eog):
    wait_until_idle(server)
    before = metric(server.url, "generated_tokens_total")
    body = json.dumps(
        {"prompt": "Write a very long essay:", "max_tokens": LONG, "temperature": 0.9, "seed": 3, "logit_bias": no_eog}
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_until(
            lambda: metric(server.url, "slots_busy") == 1 and metric(server.url, "generated_tokens_total") > before,
            "the request to generate",
        )
    # The client has left before any answer came; the server notices and cancels.
    wait_until_idle(server)
    generated = metric(server.url, "generated_tokens_total") - before
    assert 1 <= generated < LONG // 2  # cancelled, not run to max_tokens


def test_a_slow_reader_does_not_stall_other_clients(server, no_eog):
    wait_until_idle(server)
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        timeout=PATIENCE,
        json={"prompt": "Tell a long tale:", "max_tokens": 120, "stream": True, "temperature": 0.8, "seed": 2},
    ) as slow:
        lines = slow.iter_lines()
        first = next(lines)  # then read nothing while another client is served
        assert first.startswith("data: ")
        # Served while the slow stream is unread: a stalled engine would leave this to post()'s timeout.
        other = post(
            server, "/v1/completions", {"prompt": "Quick one:", "max_tokens": 8, "temperature": 0, "logit_bias": no_eog}
        )
        assert other.status_code == 200 and other.json()["usage"]["completion_tokens"] == 8
        rest = [line for line in lines if line]  # everything generated meanwhile was kept for the slow reader
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in [first, *rest] if line.startswith("data: {")]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")


def test_logprobs_in_completions(client, no_eog):
    r = client.completions.create(
        model="m", prompt="The sky is", max_tokens=3, temperature=0, logprobs=2, logit_bias=no_eog
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert "".join(lp.tokens) == r.choices[0].text
    # The 2 best and, as OpenAI's legacy API, the chosen token when it is not among them.
    assert all(
        2 <= len(alternatives) <= 3 and alternatives[token] == logprob
        for token, logprob, alternatives in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
    )
    assert lp.text_offset == [0, len(lp.tokens[0]), len(lp.tokens[0]) + len(lp.tokens[1])]


def test_extreme_sampling_values_are_answered_not_hung(server, no_eog):
    tiny = post(
        server,
        "/v1/completions",
        {"prompt": "Hi", "max_tokens": 3, "temperature": 1e-40, "top_p": 0.5, "logit_bias": no_eog},
    )
    assert tiny.status_code == 200 and tiny.json()["usage"]["completion_tokens"] == 3
    r = post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 3, "repeat_penalty": 1e-300})
    assert r.status_code == 400 and r.json()["error"]["param"] == "repeat_penalty"


def test_a_negative_seed_is_a_seed(server):
    body = {"prompt": "Pick a word:", "max_tokens": 6, "temperature": 1.0, "seed": -1}
    same_cache_state(server, lambda: post(server, "/v1/completions", body))
    first, second = post(server, "/v1/completions", body).json(), post(server, "/v1/completions", body).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == first["usage"]["prompt_tokens"] - 1
    assert second["usage"] == first["usage"]
    assert first["choices"][0]["text"] == second["choices"][0]["text"]


def test_more_generations_than_the_queue_holds_is_a_400_not_a_retry(server):
    r = post(server, "/v1/completions", {"prompt": ["a"] * 8, "n": 9, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_the_sdk_retrieves_the_served_model_and_not_another(client):
    served = client.models.list().data[0].id
    assert client.models.retrieve(served).id == served
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
