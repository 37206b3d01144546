"""Control vectors (helios_core/control_vector.py): NumPy vectors and llama.cpp's GGUF files, on a context."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helios_core import control_vector
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.errors import ModelLoadError
from tests.conftest import THREADS

PROMPT = "The weather today is"


def last_logits(ctx: Context, tokens: list[int]) -> np.ndarray:
    ctx.memory_clear()  # the cache keeps states computed under an earlier vector
    batch = Batch(len(tokens))
    batch.set(tokens)
    ctx.decode(batch)
    return ctx.logits(len(tokens) - 1).copy()


@pytest.fixture
def steered(model):
    with Context(model, n_ctx=128, n_threads=THREADS) as ctx:
        yield ctx, model.vocab.tokenize(PROMPT)


def direction(model, seed: int = 0) -> np.ndarray:
    vector = control_vector.zeros(model)
    vector[1:] = np.random.default_rng(seed).normal(0.0, 1.0, vector[1:].shape)
    return vector


def test_scale_zero_changes_nothing_and_a_scaled_vector_moves_the_logits(model, steered):
    ctx, tokens = steered
    plain = last_logits(ctx, tokens)
    control_vector.apply(ctx, direction(model), scale=0.0)
    # The same context, batch and threads: adding zeros leaves every float as it was.
    assert np.array_equal(last_logits(ctx, tokens), plain)
    control_vector.apply(ctx, direction(model), scale=4.0)
    moved = last_logits(ctx, tokens)
    assert np.abs(moved - plain).max() > 1.0
    control_vector.apply(ctx, None)
    assert np.array_equal(last_logits(ctx, tokens), plain)


def test_a_layer_range_steers_only_those_layers(model, steered):
    ctx, tokens = steered
    plain = last_logits(ctx, tokens)
    vector = control_vector.zeros(model)
    vector[3] = 5.0 * np.random.default_rng(1).normal(size=model.n_embd)
    control_vector.apply(ctx, vector, layers=(4, model.n_layer - 1))  # layer 3 lies outside
    assert np.array_equal(last_logits(ctx, tokens), plain)
    control_vector.apply(ctx, vector, layers=(3, 3))
    assert np.abs(last_logits(ctx, tokens) - plain).max() > 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v[:, :-1], "has shape"),
        (lambda v: v + 1.0, "row 0"),
        (lambda v: np.where(np.arange(v.shape[0])[:, None] == 2, np.nan, v), "finite"),
    ],
)
def test_a_vector_that_does_not_fit_is_refused(model, steered, change, message):
    ctx, _ = steered
    with pytest.raises(ValueError, match=message):
        control_vector.apply(ctx, change(direction(model)))


def write_vector(path, directions: dict[int, np.ndarray], arch: str = "gemma3") -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("controlvector.model_hint", arch)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, values in directions.items():
        writer.add_tensor(f"direction.{layer}", values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_file_loads_scaled_and_files_add_up(model, tmp_path):
    rng = np.random.default_rng(2)
    first, second = rng.normal(size=model.n_embd), rng.normal(size=model.n_embd)
    write_vector(tmp_path / "a.gguf", {2: first, 5: second})
    write_vector(tmp_path / "b.gguf", {5: second})
    loaded = control_vector.load(tmp_path / "a.gguf", model, scale=0.5)
    assert loaded.shape == (model.n_layer, model.n_embd) and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded[2], 0.5 * first, rtol=1e-6)
    np.testing.assert_allclose(loaded[5], 0.5 * second, rtol=1e-6)
    assert not loaded[[0, 1, 3, 4]].any()
    total = control_vector.load_all([(tmp_path / "a.gguf", 1.0), (tmp_path / "b.gguf", -1.0)], model)
    np.testing.assert_allclose(total[5], 0.0, atol=1e-6)


def test_files_that_do_not_fit_are_one_line_errors(model, tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    write_vector(tmp_path / "wide.gguf", {1: np.ones(model.n_embd + 1)})
    write_vector(tmp_path / "deep.gguf", {model.n_layer: np.ones(model.n_embd)})
    for name, words in [
        ("junk.gguf", "not a readable GGUF"),
        ("wide.gguf", "another model"),
        ("deep.gguf", "is not direction.<layer>"),
        ("missing.gguf", "not a readable GGUF"),
    ]:
        with pytest.raises(ModelLoadError, match=words) as error:
            control_vector.load(tmp_path / name, model)
        assert "\n" not in str(error.value)


def test_generate_takes_control_vector_files_and_names_a_bad_one(model, tmp_path):
    write_vector(tmp_path / "v.gguf", {layer: np.full(model.n_embd, 0.0) for layer in (1, 2)})
    args = [
        sys.executable,
        "-m",
        "helios_cli",
        "generate",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "3",
        "--temperature",
        "0",
        "--ctx-size",
        "128",
        "--threads",
        str(THREADS),
    ]
    steered = subprocess.run(
        [*args, "--control-vector", f"{tmp_path / 'v.gguf'}:2", "--control-vector-layers", "1-2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert steered.returncode == 0, steered.stderr
    bad = subprocess.run(
        [*args, "--control-vector", str(tmp_path / "absent.gguf")], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("not a readable GGUF file") and bad.stderr.count("\n") == 1
