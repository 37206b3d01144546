"""Images through a real `helios-engine serve --mmproj`: chat's image_url parts, the limits, the prefix cache.

The projector is benchmarks/harness/mmproj.py's tiny random one: these tests check plumbing
(token counts, logits that move or match, cached tokens, 400s naming the part), never
what the model says about an image.
"""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from benchmarks.harness.media import MTMD_MEDIA, SVG, png, png_header, truncated
from benchmarks.harness.mmproj import AUDIO_TOKENS, TOKENS_PER_IMAGE, write_mmproj
from tests.conftest import LOGIT_TOLERANCE, PATIENCE
from tests.server_process import ServerProcess

MAX_ITEMS = 3


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "test-1.jpeg").write_bytes((MTMD_MEDIA / "test-1.jpeg").read_bytes())
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, media_dir):
    mmproj = write_mmproj(tmp_path_factory.mktemp("mmproj") / "tiny.gguf")
    proc = ServerProcess(
        *("--ctx-size", "512", "--parallel", "2", "--mmproj", str(mmproj), "--media-path", str(media_dir)),
        *("--media-max-items", str(MAX_ITEMS), "--media-max-mb", "1"),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=PATIENCE)


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(*urls: str, text: str = "Describe the image.") -> list[dict]:
    parts = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


def chat(server, messages: list[dict], **fields) -> httpx.Response:
    body = {"messages": messages, "max_tokens": 1, "temperature": 0, **fields}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=PATIENCE)


def top_logprobs(server, url: str) -> dict[str, float]:
    response = chat(server, image_message(url), logprobs=True, top_logprobs=20)
    assert response.status_code == 200, response.text
    [entry] = response.json()["choices"][0]["logprobs"]["content"]
    return {alt["token"]: alt["logprob"] for alt in entry["top_logprobs"]}


def close(a: dict[str, float], b: dict[str, float]) -> bool:
    common = a.keys() & b.keys()
    return len(common) >= 15 and all(abs(a[t] - b[t]) <= LOGIT_TOLERANCE for t in common)


def refusal(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    return error["param"], error["message"]


# --- what the server says it serves ----------------------------------------------------------------


def test_models_and_props_say_images_are_served(server):
    [entry] = httpx.get(f"{server.url}/v1/models", timeout=PATIENCE).json()["data"]
    assert entry["modalities"] == ["text", "image"]
    props = httpx.get(f"{server.url}/props", timeout=PATIENCE).json()
    assert props["modalities"] == {"vision": True, "video": False, "audio": False}


# --- images through chat -----------------------------------------------------------------------------


def test_an_image_adds_its_tokens_to_the_prompt_through_the_sdk(client):
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Describe the image."}]}]
    plain = client.chat.completions.create(model="m", messages=text_only, max_tokens=1, temperature=0)
    pictured = client.chat.completions.create(
        model="m", messages=image_message(data_url(png(seed=1))), max_tokens=1, temperature=0
    )
    extra = pictured.usage.prompt_tokens - plain.usage.prompt_tokens
    assert TOKENS_PER_IMAGE <= extra <= TOKENS_PER_IMAGE + 2  # the image, and the newline that joins the parts


def test_two_images_give_different_next_token_logprobs(server):
    assert not close(top_logprobs(server, data_url(png(seed=5))), top_logprobs(server, data_url(png(seed=6))))


def test_the_same_image_gives_the_same_logprobs(server):
    first = top_logprobs(server, data_url(png(seed=7)))
    chat(server, image_message(data_url(png(seed=8))))  # another image between the two
    assert close(top_logprobs(server, data_url(png(seed=7))), first)


def test_the_image_is_not_read_again_on_the_next_turn(server):
    messages = image_message(data_url(png(seed=9)))
    first = chat(server, messages).json()
    answer = first["choices"][0]["message"]["content"]
    follow = messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And then?"}]
    usage = chat(server, follow).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= TOKENS_PER_IMAGE


def test_the_tree_jpeg_is_read_from_a_data_url_and_from_the_media_path(server):
    jpeg = (MTMD_MEDIA / "test-1.jpeg").read_bytes()
    for url in (data_url(jpeg, "image/jpeg"), "file://test-1.jpeg"):
        response = chat(server, image_message(url))
        assert response.status_code == 200, (url[:40], response.text)


# --- refusals: 400s naming the part --------------------------------------------------------------------

PART = "messages[0].content[1]"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://example.com/cat.png", "--allow-remote-media"),
        ("data:image/png;base64,not*base64!", "base64"),
        (data_url(SVG, "image/svg+xml"), "not an image format"),
        (data_url(png_header(20_000, 20_000)), "20000 x 20000"),
        (data_url(truncated(png(seed=3))), "could not be decoded"),
        (data_url(b"\x89PNG" + b"\0" * (1024 * 1024 + 16)), "bytes"),
        ("../outside.png", "--media-path"),
        ("data:image/png,rawbytes", "data URL"),
    ],
    ids=["remote", "base64", "svg", "huge-header", "truncated-png", "too-many-bytes", "outside-media-path", "no-b64"],
)
def test_bad_media_is_a_400_naming_the_part(server, url, says):
    param, message = refusal(chat(server, image_message(url)))
    assert param.startswith(PART) and says in message


def test_more_items_than_the_limit_is_a_400_naming_the_first_too_many(server):
    urls = [data_url(png(seed=i)) for i in range(MAX_ITEMS + 1)]
    param, message = refusal(chat(server, image_message(*urls)))
    assert param == f"messages[0].content[{MAX_ITEMS + 1}]" and f"at most {MAX_ITEMS}" in message


def test_audio_to_an_image_projector_is_a_400(server):
    audio = base64.b64encode((MTMD_MEDIA / "test-2.mp3").read_bytes()).decode()
    sound = {"type": "input_audio", "input_audio": {"data": audio, "format": "mp3"}}
    content = [{"type": "text", "text": "Listen."}, sound]
    param, message = refusal(chat(server, [{"role": "user", "content": content}]))
    assert param == PART and "no audio" in message


def test_an_image_streams_through_chat(server):
    body = {"messages": image_message(data_url(png(seed=14))), "max_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=PATIENCE) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and '"finish_reason"' in lines[-2]


def test_the_server_keeps_serving_after_bad_media(server):
    refusal(chat(server, image_message(data_url(truncated(png(seed=4))))))
    assert chat(server, image_message(data_url(png(seed=4)))).status_code == 200


# --- the other families: Responses input_image, Messages image blocks ------------------------------------


def test_an_input_image_goes_through_responses(server, client):
    content = [{"type": "input_text", "text": "Describe it."}, {"type": "input_image", "image_url": data_url(png())}]
    response = client.responses.create(
        model="m", input=[{"role": "user", "content": content}], max_output_tokens=1, temperature=0
    )
    assert response.usage.input_tokens >= TOKENS_PER_IMAGE


def test_an_image_block_goes_through_messages(server):
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png(seed=11)).decode()}
    content = [{"type": "text", "text": "Describe it."}, {"type": "image", "source": source}]
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{server.url}/v1/messages", json=body, timeout=PATIENCE)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) >= TOKENS_PER_IMAGE


def test_bad_media_in_responses_and_messages_names_their_own_field(server):
    bad = data_url(truncated(png()))
    body = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": bad}]}]}
    error = httpx.post(f"{server.url}/v1/responses", json=body, timeout=PATIENCE).json()["error"]
    assert error["param"] == "input[0].content[0]"
    source = {"type": "base64", "media_type": "image/png", "data": "not*base64"}
    blocks = [{"type": "text", "text": "Hi"}, {"type": "image", "source": source}]
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": blocks}]}
    response = httpx.post(f"{server.url}/v1/messages", json=body, timeout=PATIENCE)
    assert response.status_code == 400 and "messages[0].content[1]" in response.json()["error"]["message"]


def test_the_docs_openai_example_runs_against_the_server(server, capsys):
    import re

    from tests.conftest import ROOT

    text = (ROOT / "docs" / "multimodal.md").read_text()
    code = re.search(r"<!-- multimodal-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", server.url).replace("max_tokens=64", "max_tokens=2")
    code = code.replace('open("vendor/', f'open("{ROOT}/vendor/')
    exec(compile(code, "docs/multimodal.md", "exec"), {})
    assert "prompt tokens, the image's among them" in capsys.readouterr().out


@pytest.mark.slow
def test_input_audio_goes_through_chat_with_an_audio_projector(tmp_path):
    mmproj = write_mmproj(tmp_path / "av.gguf", audio=True)
    proc = ServerProcess("--ctx-size", "1024", "--parallel", "1", "--mmproj", str(mmproj))
    try:
        models = httpx.get(f"{proc.url}/v1/models", timeout=PATIENCE).json()["data"]
        assert models[0]["modalities"] == ["text", "image", "audio"]
        audio = base64.b64encode((MTMD_MEDIA / "test-2.mp3").read_bytes()).decode()
        sound = {"type": "input_audio", "input_audio": {"data": audio, "format": "mp3"}}
        messages = [{"role": "user", "content": [{"type": "text", "text": "Who speaks?"}, sound]}]
        response = chat(proc, messages)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] > AUDIO_TOKENS
    finally:
        proc.stop()
