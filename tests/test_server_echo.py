"""/v1/completions as evaluation clients use it: echo, prompt logprobs, max_tokens 0, batched token prompts."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import orjson
import pytest

from helios_core.context import Context
from helios_core.scoring import score
from tests.conftest import LOGIT_TOLERANCE, PATIENCE, THREADS
from tests.server_process import PLAIN

PROMPT = "The capital of France is Paris. The capital of Italy is"


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server(*PLAIN)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


def post(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", json=body, timeout=PATIENCE)


@pytest.fixture(scope="module")
def scored(model):
    """PROMPT scored by the Python API, top 3 alternatives per token."""
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        return score(ctx, [PROMPT], top_logprobs=3)[0]


def test_echo_with_max_tokens_0_returns_the_prompt_and_its_logprobs_through_the_sdk(client, scored, model):
    completion = client.completions.create(model="m", prompt=PROMPT, max_tokens=0, echo=True, logprobs=3)
    choice = completion.choices[0]
    assert choice.text == PROMPT
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 0
    assert completion.usage.prompt_tokens == scored.tokens.size
    logprobs = choice.logprobs
    pieces = [model.vocab.token_to_piece(t).decode() for t in scored.tokens.tolist()]
    assert logprobs.tokens == pieces
    # OpenAI's legacy shape: nothing for the first token, which nothing predicts.
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    np.testing.assert_allclose(logprobs.token_logprobs[1:], scored.logprobs, atol=2 * LOGIT_TOLERANCE)
    assert logprobs.text_offset == [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    for token, chosen, top in zip(
        logprobs.tokens[1:], logprobs.token_logprobs[1:], logprobs.top_logprobs[1:], strict=True
    ):
        # The 3 best and the chosen token, as OpenAI's legacy API: up to logprobs + 1 entries.
        assert 3 <= len(top) <= 4 and top[token] == chosen
        assert max(top.values()) >= chosen


def test_a_prompt_token_that_is_the_best_has_its_logprob_equal_to_the_best_entry(client):
    # lm-eval decides "greedy" by comparing the token's logprob with the best entry using ==.
    body = client.completions.create(model="m", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    logprobs = body.choices[0].logprobs
    pairs = list(zip(logprobs.tokens[1:], logprobs.token_logprobs[1:], logprobs.top_logprobs[1:], strict=True))
    # With logprobs 1 an entry holds the best token, and the chosen one too when it is another.
    best_ones = [(chosen, top) for _, chosen, top in pairs if len(top) == 1]
    assert best_ones, "some token of the prompt should be the model's first choice"
    assert all(max(top.values()) == chosen for chosen, top in best_ones)
    assert all(max(top.values()) > chosen for _, chosen, top in pairs if len(top) == 2)


def test_echo_then_generated_tokens_continue_the_logprobs_and_offsets(server):
    body = post(server, {"prompt": PROMPT, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": 1}).json()
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    n_prompt = body["usage"]["prompt_tokens"]
    assert choice["text"].startswith(PROMPT)
    assert len(logprobs["tokens"]) == n_prompt + body["usage"]["completion_tokens"]
    assert all(lp is not None for lp in logprobs["token_logprobs"][1:])
    generated_offsets = logprobs["text_offset"][n_prompt:]
    assert generated_offsets[0] == len(PROMPT)
    assert choice["text"][len(PROMPT) :] == "".join(logprobs["tokens"][n_prompt:])


def test_token_list_prompts_come_back_as_one_scored_choice_each_in_order(server, model):
    # What lm-evaluation-harness's local-completions sends for log-likelihoods.
    prompts = [model.vocab.tokenize(text, add_special=False) for text in ("Paris is in", "One, two,", "Red")]
    body = post(
        server, {"prompt": prompts, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True, "seed": 1234}
    ).json()
    choices = sorted(body["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1, 2]
    for prompt, choice in zip(prompts, choices, strict=True):
        logprobs = choice["logprobs"]
        assert len(logprobs["token_logprobs"]) == len(prompt) + 1  # the prompt, then the one generated token
        assert logprobs["token_logprobs"][0] is None
        assert choice["text"].startswith(model.vocab.detokenize(prompt))


def test_echo_streams_the_prompt_with_its_logprobs_first(server, model):
    no_eog = {str(token): -100 for token in model.vocab.eog_tokens}  # so two tokens always follow the prompt
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        timeout=PATIENCE,
        json={
            "prompt": PROMPT,
            "max_tokens": 2,
            "temperature": 0,
            "echo": True,
            "logprobs": 1,
            "stream": True,
            "logit_bias": no_eog,
        },
    ) as response:
        chunks = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    first = orjson.loads(chunks[0])["choices"][0]
    assert first["text"] == PROMPT
    assert first["logprobs"]["token_logprobs"][0] is None
    texts = [orjson.loads(c)["choices"][0]["text"] for c in chunks[:-1]]
    assert "".join(texts).startswith(PROMPT) and len("".join(texts)) > len(PROMPT)


def test_echo_without_logprobs_prefixes_every_choice(client):
    completion = client.completions.create(model="m", prompt="Hello", max_tokens=2, echo=True, n=2, seed=7)
    assert len(completion.choices) == 2
    assert all(choice.text.startswith("Hello") for choice in completion.choices)
    assert all(choice.logprobs is None for choice in completion.choices)


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/completions", {"prompt": "Hi", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "", "max_tokens": 0, "echo": True}, "prompt"),
        ("/v1/completions", {"prompt": [[2, 300_000]], "max_tokens": 0, "echo": True, "logprobs": 1}, "prompt"),
        ("/v1/completions", {"prompt": "Hi", "echo": "yes"}, "echo"),
        ("/v1/completions", {"prompt": "Hi", "echo": True, "logprobs": 6}, "logprobs"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "echo": True}, "echo"),
    ],
    ids=[
        "max-tokens-0-without-echo",
        "empty-text",
        "token-out-of-range",
        "echo-not-boolean",
        "too-many-logprobs",
        "echo-on-chat",
    ],
)
def test_bad_scoring_requests_are_400s_naming_the_field(server, path, body, param):
    response = httpx.post(f"{server.url}{path}", json=body, timeout=PATIENCE)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
