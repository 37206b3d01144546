"""LoRA adapters (helios_core/lora.py, --lora, /lora-adapters): real adapter files, written here for the default model.

write_adapter() makes a LoRA GGUF as llama.cpp's convert_lora_to_gguf.py does: for every layer,
low-rank A (rank x n_in) and B (n_out x rank) for the attention projections q, k, v and output,
general.type "adapter", adapter.type "lora" and adapter.lora.alpha. Random A and B (std 0.05,
rank 8, alpha 16) move the default model's logits by about 17 on one prompt, and two such
adapters differ by about 19: several times conftest.LOGIT_TOLERANCE, so a request decoded under
the wrong adapter cannot pass for batching noise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from benchmarks.harness import free_port, wait_healthy, write_adapter
from helios_core import lora
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.engine import Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.errors import ClosedError, ModelLoadError
from helios_core.generate import Generator
from helios_core.kvcache import CachedSequence
from helios_core.model import Model
from helios_core.resolve import default_model_path
from helios_core.sequence import GenerationParams
from tests.conftest import LOGIT_TOLERANCE, PATIENCE, THREADS, teacher_forced
from tests.server_process import ServerProcess
from tests.test_scoring import _tool

PROMPT = "The weather today is"


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    made = {
        "a": write_adapter(folder / "a.gguf", model, seed=0),
        "b": write_adapter(folder / "b.gguf", model, seed=1),
        "llama": write_adapter(folder / "llama.gguf", model, architecture="llama"),
    }
    data = made["a"].read_bytes()
    (folder / "truncated.gguf").write_bytes(data[: len(data) // 2])
    made["truncated"] = folder / "truncated.gguf"
    made["missing"] = folder / "missing.gguf"
    return made


@pytest.fixture(scope="module")
def adapters(model, files) -> tuple[lora.Adapter, lora.Adapter]:
    return lora.Adapter(model, files["a"]), lora.Adapter(model, files["b"])


def last_logits(ctx: Context, tokens: list[int]) -> np.ndarray:
    ctx.memory_clear()  # the cache keeps states computed under the earlier set
    batch = Batch(len(tokens))
    batch.set(tokens)
    ctx.decode(batch)
    return ctx.logits(len(tokens) - 1).copy()


# --- the core: adapters, sets, contexts ------------------------------------------------------------


def test_scale_zero_gives_the_base_logits_and_scale_one_moves_them(model, adapters):
    a, b = adapters
    tokens = model.vocab.tokenize(PROMPT)
    with Context(model, n_ctx=128, n_threads=THREADS) as ctx:
        base = last_logits(ctx, tokens)
        lora.apply(ctx, [(a, 0.0)])
        assert ctx.lora == ()  # a zero scale is no adapter at all
        assert np.array_equal(last_logits(ctx, tokens), base)
        lora.apply(ctx, [(a, 1.0)])
        with_a = last_logits(ctx, tokens)
        assert np.abs(with_a - base).max() > 3 * LOGIT_TOLERANCE
        lora.apply(ctx, [(b, 1.0)])
        assert np.abs(last_logits(ctx, tokens) - with_a).max() > 3 * LOGIT_TOLERANCE
        lora.apply(ctx, ())
        assert np.array_equal(last_logits(ctx, tokens), base)


def test_sets_are_canonical_and_applying_the_current_one_does_nothing(model, adapters, monkeypatch):
    a, b = adapters
    assert lora.adapter_set([(b, 0.5), (a, 1)]) == ((a, 1.0), (b, 0.5))  # in load order
    assert lora.adapter_set([(a, 0.0)]) == ()
    with pytest.raises(ValueError, match="given twice"):
        lora.adapter_set([(a, 1.0), (a, 0.5)])
    with Context(model, n_ctx=64, n_threads=THREADS) as ctx:
        lora.apply(ctx, [(a, 1.0)])
        calls = []
        monkeypatch.setattr(lora._llama, "llama_set_adapters_lora", lambda *args: calls.append(args))
        lora.apply(ctx, [(a, 1.0)])
        lora.apply(ctx, ctx.lora)
        assert calls == []


def test_an_adapter_reads_its_metadata_and_closes_with_its_model(files):
    with Model(default_model_path()) as own:
        adapter = lora.Adapter(own, files["a"])
        assert adapter.name == "a" and adapter.alpha == 16.0
        assert adapter.meta_items()["adapter.type"] == "lora"
    assert adapter.closed
    with pytest.raises(ClosedError):
        adapter.meta("adapter.type")


@pytest.mark.parametrize(
    "name, says",
    [
        ("llama", "made for architecture 'llama', not this model's 'gemma3'"),
        ("truncated", "truncated"),
        ("missing", "no such file"),
    ],
)
def test_a_file_that_does_not_fit_is_a_one_line_error_naming_it(model, files, name, says):
    with pytest.raises(ModelLoadError, match=says) as error:
        lora.Adapter(model, files[name])
    assert str(files[name]) in str(error.value) and "\n" not in str(error.value)


def test_a_prefix_cached_under_one_set_is_not_reused_under_another(model, adapters):
    a, b = adapters
    cache = CachedSequence()
    cache.tokens = [1, 2, 3, 4]
    cache.lora = ((a, 1.0),)
    assert cache.common_prefix([1, 2, 3, 4, 5], ((a, 1.0),)) == 4
    assert cache.common_prefix([1, 2, 3, 4, 5], ((b, 1.0),)) == 0
    assert cache.common_prefix([1, 2, 3, 4, 5], ()) == 0
    with Generator(model, n_ctx=256, n_threads=THREADS) as generator:
        first = generator.generate(PROMPT, GenerationParams(max_tokens=2, temperature=0, lora=[(a, 1.0)]))
        first.text()
        other = generator.generate(PROMPT, GenerationParams(max_tokens=2, temperature=0, lora=[(b, 1.0)]))
        other.text()
        assert other.usage.cached_tokens == 0
        again = generator.generate(PROMPT, GenerationParams(max_tokens=2, temperature=0, lora=[(b, 1.0)]))
        again.text()
        assert again.usage.cached_tokens > 0


def test_two_requests_with_different_adapters_each_get_what_they_get_alone(model, adapters):
    """One scheduler step decodes each adapter set's slots in a decode of their own (llama.cpp sets adapters
    per context): batched or alone, a request's logits agree within the batch tolerance."""
    a, b = adapters
    prompts = [model.vocab.tokenize(PROMPT), model.vocab.tokenize("Once upon a time, in a small village,")]
    sets = [[(a, 1.0)], [(b, 1.0)]]
    script = [236764, 506, 1902, 1092]  # tokens forced on both requests, whatever they would sample

    def run(together: bool) -> list[list[np.ndarray]]:
        captured: list[list[np.ndarray]] = [[], []]
        with Context(model, n_ctx=512, n_seq_max=2, n_threads=THREADS) as ctx:
            scheduler = Scheduler(LlamaRunner(ctx))
            for i in (0, 1):
                scheduler.submit(Request(prompts[i], teacher_forced(script, captured[i], lora=sets[i]), lambda e: None))
                if not together:
                    while scheduler.has_work:
                        scheduler.step()
            while scheduler.has_work:
                scheduler.step()
        return captured

    alone, together = run(False), run(True)
    for i in (0, 1):
        assert len(together[i]) == len(script)
        for mine, theirs in zip(together[i], alone[i], strict=True):
            assert np.abs(mine - theirs).max() < LOGIT_TOLERANCE
    # ... and each is its own adapter's: the two sets move the rows far more than the tolerance.
    assert np.abs(alone[0][0] - alone[1][0]).max() > LOGIT_TOLERANCE


# --- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, says", [("llama", "made for architecture 'llama'"), ("truncated", "truncated"), ("missing", "no such file")]
)
def test_generate_refuses_a_bad_adapter_in_one_line(files, name, says):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "helios_cli",
            "generate",
            "--prompt",
            PROMPT,
            "--max-tokens",
            "2",
            "--lora",
            str(files[name]),
        ],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 2
    assert says in result.stderr and str(files[name]) in result.stderr and result.stderr.count("\n") == 1


def test_serve_refuses_a_bad_adapter_before_loading(files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "helios_cli",
            "serve",
            "--port",
            str(free_port()),
            "--lora",
            f"{files['truncated']}:0.5",
        ],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 2
    assert "truncated" in result.stderr and result.stderr.count("\n") == 1


def test_generate_applies_an_adapter_at_its_scale(files):
    args = [
        sys.executable,
        "-m",
        "helios_cli",
        "generate",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--ctx-size",
        "128",
        "--threads",
        str(THREADS),
        "--lora",
    ]
    tuned = subprocess.run([*args, f"{files['a']}:1"], capture_output=True, text=True, timeout=PATIENCE)
    off = subprocess.run([*args, f"{files['a']}:0"], capture_output=True, text=True, timeout=PATIENCE)
    assert tuned.returncode == off.returncode == 0, tuned.stderr
    assert off.stdout != tuned.stdout  # scale 0 is the base model (test_scale_zero_...), scale 1 is not


# --- the server --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(files):
    alias = f"gpt-4o-mini={default_model_path().stem}:a"
    process = ServerProcess(
        "--lora", str(files["a"]), "--lora", f"{files['b']}:0.5", "--ctx-size", "512", "--parallel", "2",
        "--model-alias", alias,
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def model_id(server) -> str:
    return httpx.get(f"{server.url}/v1/models", timeout=PATIENCE).json()["data"][0]["id"]


def scored(server, prompt: str, **fields) -> list[float]:
    """The logprob of every prompt token after the first: its whole prompt decoded in one batch, never from cache."""
    body = {"model": "m", "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0, **fields}
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=PATIENCE)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["logprobs"]["token_logprobs"][1:]


def test_lora_adapters_lists_ids_paths_and_scales_and_post_sets_the_defaults(server, files):
    listed = httpx.get(f"{server.url}/lora-adapters", timeout=PATIENCE).json()
    assert listed == [
        {"id": 0, "path": str(files["a"]), "scale": 1.0, "name": "a"},
        {"id": 1, "path": str(files["b"]), "scale": 0.5, "name": "b"},
    ]
    try:
        set_ = httpx.post(f"{server.url}/lora-adapters", json=[{"id": 1, "scale": 0.25}], timeout=PATIENCE)
        assert set_.json() == {"success": True}
        assert [a["scale"] for a in httpx.get(f"{server.url}/lora-adapters", timeout=PATIENCE).json()] == [0.0, 0.25]
        unknown = httpx.post(f"{server.url}/lora-adapters", json=[{"id": 2, "scale": 1}], timeout=PATIENCE)
        assert unknown.status_code == 400 and "adapter 2" in unknown.json()["error"]["message"]
        assert [a["scale"] for a in httpx.get(f"{server.url}/lora-adapters", timeout=PATIENCE).json()] == [0.0, 0.25]
    finally:
        httpx.post(
            f"{server.url}/lora-adapters", json=[{"id": 0, "scale": 1}, {"id": 1, "scale": 0.5}], timeout=PATIENCE
        )


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(
    "lora_field, says",
    [([{"id": 2, "scale": 1}], "adapter 2"), ([{"id": "a", "scale": 1}], "id must be"), ({"id": 0}, "must be a list")],
)
def test_a_request_naming_an_unknown_adapter_is_a_400_naming_lora(server, path, lora_field, says):
    body = {"model": "m", "max_tokens": 1, "lora": lora_field}
    body.update({"prompt": PROMPT} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "hi"}]})
    response = httpx.post(f"{server.url}{path}", json=body, timeout=PATIENCE)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "lora" and says in error["message"]


def test_per_request_scales_and_a_model_name_pick_adapters(server, model_id):
    prompt = "A model name picks an adapter for this request only."
    base = scored(server, prompt, lora=[{"id": 0, "scale": 0}])
    only_a = scored(server, prompt, lora=[{"id": 0, "scale": 1}])
    defaults = scored(server, prompt)  # a at 1 and b at 0.5
    assert np.abs(np.subtract(only_a, base)).max() > LOGIT_TOLERANCE
    assert np.abs(np.subtract(defaults, only_a)).max() > LOGIT_TOLERANCE
    # The same set, decoded in the same shape: the same floats.
    np.testing.assert_allclose(scored(server, prompt, model=f"{model_id}:a"), only_a, atol=1e-4)
    # --model-alias maps a client's own name onto it, on OpenAI's routes as on Anthropic's.
    np.testing.assert_allclose(scored(server, prompt, model="gpt-4o-mini"), only_a, atol=1e-4)
    ids = [m["id"] for m in httpx.get(f"{server.url}/v1/models", timeout=PATIENCE).json()["data"]]
    assert ids == [model_id, f"{model_id}:a", f"{model_id}:b"]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    sdk = client.completions.create(model=f"{model_id}:a", prompt=prompt, echo=True, logprobs=1, max_tokens=0)
    np.testing.assert_allclose(sdk.choices[0].logprobs.token_logprobs[1:], only_a, atol=1e-4)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=f"{model_id}:nope", prompt=prompt, max_tokens=1)


def test_the_same_adapter_gives_llama_servers_greedy_text(server, files):
    """helios and llama-server --lora, built from the same tree, on the same context shape and threads."""
    prompt = "The best way to learn a new language is"
    port = free_port()
    process = subprocess.Popen(
        [
            str(_tool("llama-server")),
            "-m",
            str(default_model_path()),
            "--lora",
            str(files["a"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "1024",
            "-np",
            "2",
            "--kv-unified",
            "--swa-full",
            "-t",
            str(THREADS),
            "-tb",
            str(THREADS),
            "--no-webui",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    body = {"model": "m", "prompt": prompt, "max_tokens": 12, "temperature": 0}
    try:
        wait_healthy(url, process, timeout=PATIENCE)
        theirs = httpx.post(f"{url}/v1/completions", json=body, timeout=PATIENCE).json()["choices"][0]["text"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    ours = httpx.post(
        f"{server.url}/v1/completions", json={**body, "lora": [{"id": 0, "scale": 1}]}, timeout=PATIENCE
    ).json()["choices"][0]["text"]
    assert ours == theirs
