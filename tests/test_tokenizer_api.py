"""/tokenize, /detokenize and /tokenizer_info in llama-server's and vLLM's shapes (issue 10, section 2).

vLLM's shapes are what lm-evaluation-harness's remote tokenizer sends and reads. The app runs
around vocabulary-only models and a stand-in engine: these endpoints never generate.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_http.app import build_app
from helios_http.state import ServerState
from tests.conftest import VOCAB_MODELS

CTX = 512  # tokens per sequence of the stand-in engine
TEXT = "Hello world, tokenized and back."


@pytest.fixture(scope="module")
def gemma():
    """The default model (Gemma 3): <bos>, <eos>, <pad>, and no chat template in its GGUF."""
    with Model(default_model_path(), vocab_only=True) as m:
        yield m


@pytest.fixture(scope="module")
def phi3():
    """A vocabulary whose GGUF carries a chat template."""
    with Model(VOCAB_MODELS / "ggml-vocab-phi-3.gguf", vocab_only=True) as m:
        yield m


def client_for(model: Model | None, **state) -> TestClient:
    engine = None if model is None else SimpleNamespace(n_ctx_per_seq=CTX)
    app = build_app(ServerState(model_id="m", model=model, engine=engine, **state))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(gemma) -> TestClient:
    return client_for(gemma)


# --- vLLM's form, as lm-eval's remote tokenizer sends it ------------------------------------


def test_prompt_form_round_trips_through_detokenize(client, gemma):
    tokens = client.post("/tokenize", json={"prompt": TEXT, "add_special_tokens": False}).json()["tokens"]
    assert tokens == gemma.vocab.tokenize(TEXT, add_special=False)
    assert client.post("/detokenize", json={"tokens": tokens}).json()["prompt"] == TEXT


def test_prompt_form_answers_count_and_max_model_len(client, gemma):
    body = client.post("/tokenize", json={"prompt": TEXT, "add_special_tokens": False}).json()
    tokens = gemma.vocab.tokenize(TEXT, add_special=False)
    assert body == {"count": len(tokens), "max_model_len": CTX, "tokens": tokens, "token_strs": None}


def test_add_special_tokens_differs_by_the_bos_token_alone(client, gemma):
    def tokens(**flag):
        return client.post("/tokenize", json={"prompt": TEXT, **flag}).json()["tokens"]

    without = tokens(add_special_tokens=False)
    assert tokens(add_special_tokens=True) == [gemma.vocab.bos] + without
    assert tokens() == [gemma.vocab.bos] + without  # vLLM's default is true


def test_return_token_strs_gives_the_vocabulary_entries(client, gemma):
    body = client.post("/tokenize", json={"prompt": "Hello world", "return_token_strs": True}).json()
    assert body["token_strs"] == [gemma.vocab.token_text(t) for t in body["tokens"]]
    assert body["token_strs"] == ["<bos>", "Hello", "▁world"]


def test_eos_and_bos_texts_tokenize_to_their_ids(client, gemma):
    # lm-eval's eos_token_id and bos_token_id: /tokenize of the tokenizer_info texts, first token.
    info = client.get("/tokenizer_info").json()
    for text, token in [(info["eos_token"], gemma.vocab.eos), (info["bos_token"], gemma.vocab.bos)]:
        assert client.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()["tokens"] == [token]


# --- llama-server's form ------------------------------------------------------------------


def test_content_form_answers_tokens_alone_and_round_trips(client, gemma):
    body = client.post("/tokenize", json={"content": TEXT}).json()
    assert body == {"tokens": gemma.vocab.tokenize(TEXT, add_special=False)}
    assert client.post("/detokenize", json={"tokens": body["tokens"]}).json()["content"] == TEXT


def test_content_form_add_special_adds_the_bos_token(client, gemma):
    without = client.post("/tokenize", json={"content": TEXT}).json()["tokens"]
    with_bos = client.post("/tokenize", json={"content": TEXT, "add_special": True}).json()["tokens"]
    assert with_bos == [gemma.vocab.bos] + without


def test_detokenize_answers_both_families_keys_with_special_tokens_written_out(client, gemma):
    tokens = [gemma.vocab.bos] + gemma.vocab.tokenize("Hi", add_special=False)
    assert client.post("/detokenize", json={"tokens": tokens}).json() == {"content": "<bos>Hi", "prompt": "<bos>Hi"}


# --- /tokenizer_info ----------------------------------------------------------------------


def test_tokenizer_info_names_the_models_special_tokens_and_length(client, gemma):
    vocab = gemma.vocab
    assert client.get("/tokenizer_info").json() == {
        "tokenizer_class": gemma.meta("tokenizer.ggml.model"),
        "bos_token": vocab.token_text(vocab.bos),
        "eos_token": vocab.token_text(vocab.eos),
        "pad_token": vocab.token_text(int(gemma.meta("tokenizer.ggml.padding_token_id"))),
        "add_bos_token": vocab.add_bos,
        "model_max_length": CTX,
    }  # and no chat_template: this GGUF has none
    assert (vocab.token_text(vocab.bos), vocab.token_text(vocab.eos)) == ("<bos>", "<eos>")


def test_tokenizer_info_carries_the_ggufs_chat_template(phi3):
    info = client_for(phi3).get("/tokenizer_info").json()
    assert info["chat_template"] == phi3.chat_template() and info["chat_template"].startswith("{{ bos_token }}")
    assert (info["bos_token"], info["eos_token"]) == ("<s>", "<|endoftext|>")


def test_the_servers_jinja_template_replaces_the_models(phi3):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert client_for(phi3, chat_template=template).get("/tokenizer_info").json()["chat_template"] == template


def test_a_built_in_template_name_gives_no_chat_template(phi3):
    assert "chat_template" not in client_for(phi3, chat_template="chatml").get("/tokenizer_info").json()


def test_tokenizer_info_is_503_while_the_model_loads():
    r = client_for(None).get("/tokenizer_info")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"


# --- client mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/tokenize", {}, "content"),
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/tokenize", {"prompt": ["a", "b"]}, "prompt"),
        ("/tokenize", {"prompt": "a", "content": "a"}, "prompt"),
        ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens"),
        ("/tokenize", {"prompt": "a", "return_token_strs": 1}, "return_token_strs"),
        ("/tokenize", {"messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ("/tokenize", {"content": None}, "content"),
        ("/tokenize", {"content": "a", "add_special": "no"}, "add_special"),
        ("/tokenize", {"content": "a", "with_pieces": 0}, "with_pieces"),
        ("/detokenize", {}, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
        ("/detokenize", {"tokens": [1.5]}, "tokens"),
        ("/detokenize", {"tokens": [True]}, "tokens"),
        ("/detokenize", {"tokens": [-1]}, "tokens"),
        ("/detokenize", {"tokens": [2**40]}, "tokens"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(client, path, body, param):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
