"""The ctypes core over the default model: load, metadata, decode, logits views, memory."""

from __future__ import annotations

import ctypes
import logging

import numpy as np
import pytest

from helios_core import _llama, backend
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.errors import ClosedError, ContextError, ContextFullError, DecodeError, HeliosError, ModelLoadError
from helios_core.model import Model
from helios_core.resolve import default_model_path
from tests.conftest import THREADS, assert_logits_close

PROMPT = "The capital of France is"


def decode_prompt(ctx: Context, tokens: list[int], seq_id: int = 0) -> Batch:
    batch = Batch(ctx.n_batch)
    batch.set(tokens, 0, seq_id)
    ctx.decode(batch)
    return batch


def test_system_info_names_the_cpu_backend():
    info = backend.system_info()
    assert "CPU" in info


def test_model_metadata(model):
    assert model.architecture == "gemma3"
    assert "gemma3" in model.description
    assert model.meta("general.architecture") == "gemma3"
    assert model.meta("no.such.key") is None
    assert "general.architecture" in model.meta_keys()
    assert model.n_ctx_train == 32768
    assert 260_000_000 < model.n_params < 280_000_000
    assert model.n_swa == 512
    assert model.chat_template() is None  # this GGUF carries none; chat.py falls back to "gemma"
    assert model.vocab.n_vocab == 262144


def test_llama_logs_go_to_python_logging_not_stderr(caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="helios.llama")
    with Model(default_model_path(), vocab_only=True):
        pass
    assert any("gemma3" in r.getMessage() for r in caplog.records if r.name == "helios.llama")
    assert capfd.readouterr().err == ""


def test_logits_are_a_view_of_the_c_buffer_not_a_copy(model, ctx):
    tokens = model.vocab.tokenize(PROMPT)
    batch = decode_prompt(ctx, tokens)
    row = batch.n_tokens - 1
    view = ctx.logits(row)
    address = _llama.llama_get_logits_ith(ctx.ptr, row)
    c_row = (ctypes.c_float * model.vocab.n_vocab).from_address(address)
    assert view.dtype == np.float32 and view.shape == (model.vocab.n_vocab,)
    assert view.ctypes.data == address
    assert not view.flags.owndata
    # Same memory: what C holds is what the view reads.
    assert view[123] == c_row[123]


def test_logits_view_is_read_only(model, ctx):
    decode_prompt(ctx, model.vocab.tokenize(PROMPT))
    with pytest.raises(ValueError):
        ctx.logits(-1)[0] = 0.0


def test_logits_of_a_row_without_output_raise(model, ctx):
    decode_prompt(ctx, model.vocab.tokenize(PROMPT))
    with pytest.raises(DecodeError, match="not marked for output"):
        ctx.logits(0)


def test_batch_arrays_are_the_memory_llama_batch_points_to():
    batch = Batch(8, n_seq_max=2)
    batch.set([5, 6, 7], start_pos=10, seq_id=1)
    c = batch.c
    assert c.n_tokens == 3
    assert ctypes.addressof(c.token.contents) == batch.token.ctypes.data
    assert ctypes.addressof(c.pos.contents) == batch.pos.ctypes.data
    assert ctypes.addressof(c.logits.contents) == batch.logits.ctypes.data
    assert [c.token[i] for i in range(3)] == [5, 6, 7]
    assert [c.pos[i] for i in range(3)] == [10, 11, 12]
    assert [c.seq_id[i][0] for i in range(3)] == [1, 1, 1]
    assert [c.logits[i] for i in range(3)] == [0, 0, 1]


def test_a_one_token_add_fills_the_row_it_appends():
    batch = Batch(4, n_seq_max=2)
    batch.add([5, 6], start_pos=3, seq_id=1, logits_last=True)
    assert batch.add(np.array([7], dtype=np.int32), 9, seq_id=2) == slice(2, 3)
    assert batch.add([8], 10, seq_id=2, logits_last=True) == slice(3, 4)
    assert batch.n_tokens == 4
    assert batch.token.tolist() == [5, 6, 7, 8] and batch.pos.tolist() == [3, 4, 9, 10]
    assert batch.seq_id[:, 0].tolist() == [1, 1, 2, 2] and batch.n_seq_id.tolist() == [1, 1, 1, 1]
    assert batch.logits.tolist() == [0, 1, 0, 1]


def test_argmax_over_the_view_matches_llama_cpp_greedy_sampler_for_32_steps(model):
    tokens = model.vocab.tokenize(PROMPT)

    def run(pick) -> list[int]:
        with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
            batch = decode_prompt(ctx, tokens)
            out, pos = [], len(tokens)
            for _ in range(32):
                token = pick(ctx, batch.n_tokens - 1)
                out.append(token)
                batch.set([token], pos)
                pos += 1
                ctx.decode(batch)
            return out

    sampler = _llama.llama_sampler_init_greedy()
    try:
        theirs = run(lambda ctx, row: _llama.llama_sampler_sample(sampler, ctx.ptr, row))
    finally:
        _llama.llama_sampler_free(sampler)
    ours = run(lambda ctx, row: int(np.argmax(ctx.logits(row))))
    assert ours == theirs


def test_seq_rm_of_a_tail_then_redecode_matches_a_fresh_context(model):
    # llama.cpp's CPU kernels depend on batch size (splitting one prompt into
    # two decodes moves logits by up to ~1.0), so both sides use the same
    # batch shapes: prefix of 6, then a tail of 5. Only the stale tail differs.
    tokens = model.vocab.tokenize("One two three four five six seven eight nine ten")
    prefix, tail = tokens[:6], tokens[6:]
    stale = model.vocab.tokenize(" apples pears plums figs kiwis", add_special=False)[: len(tail)]
    assert len(stale) == len(tail) and stale != tail

    def decode_runs(ctx, *runs):
        batch, pos = Batch(64), 0
        for run in runs:
            if run == "rm":
                assert ctx.seq_rm(0, len(prefix), -1)
                assert ctx.seq_pos_max(0) == len(prefix) - 1
                pos = len(prefix)
                continue
            batch.set(run, pos)
            ctx.decode(batch)
            pos += len(run)
        return ctx.logits(-1).copy()

    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as fresh:
        expected = decode_runs(fresh, prefix, tail)
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        got = decode_runs(ctx, prefix, stale, "rm", tail)
    # A stale cell left behind would shift logits by whole units, not by float noise.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_decoding_on_one_thread_or_several_moves_logits_by_float_noise_alone(model):
    """The suite runs each pytest-xdist worker on its share of the cores, often 1 thread: this is the
    one place that decodes on more, prompt and one-token steps both, whatever HELIOS_TEST_THREADS is."""
    tokens = model.vocab.tokenize(PROMPT)
    steps = model.vocab.tokenize(" and then the", add_special=False)  # the same inputs on both counts

    def rows(threads: int) -> list[np.ndarray]:
        with Context(model, n_ctx=256, n_batch=64, n_threads=threads) as ctx:
            batch = decode_prompt(ctx, tokens)
            got = [ctx.logits(-1).copy()]
            for position, token in enumerate(steps, start=len(tokens)):
                batch.set([token], position)
                ctx.decode(batch)
                got.append(ctx.logits(-1).copy())
        return got

    assert_logits_close(rows(2), rows(1))


def test_memory_positions_and_clear(model, ctx):
    decode_prompt(ctx, model.vocab.tokenize(PROMPT))
    n = len(model.vocab.tokenize(PROMPT))
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, n - 1)
    ctx.memory_clear()
    assert ctx.seq_pos_max(0) == -1


def test_batch_larger_than_n_batch_raises_a_clear_error(model):
    with Context(model, n_ctx=256, n_batch=8, n_threads=THREADS) as ctx:
        batch = Batch(32)
        batch.set(list(range(100, 116)))
        with pytest.raises(DecodeError, match="exceeds n_batch=8"):
            ctx.decode(batch)


def test_position_beyond_n_ctx_raises_context_full(model):
    with Context(model, n_ctx=256, n_batch=64, n_threads=THREADS) as ctx:
        batch = Batch(4)
        batch.set([100, 101], start_pos=ctx.n_ctx_seq - 1)
        with pytest.raises(ContextFullError, match="beyond the context"):
            ctx.decode(batch)


def test_token_outside_vocabulary_raises(model, ctx):
    batch = Batch(4)
    batch.set([model.vocab.n_vocab + 5])
    with pytest.raises(DecodeError, match="token ids must lie"):
        ctx.decode(batch)


def test_perf_counters_count_prompt_tokens(model, ctx):
    ctx.perf_reset()
    tokens = model.vocab.tokenize(PROMPT)
    decode_prompt(ctx, tokens)
    assert ctx.perf().prompt_tokens == len(tokens)


def test_close_is_idempotent_and_closed_objects_raise(model):
    ctx = Context(model, n_ctx=128, n_batch=16, n_threads=THREADS)
    ctx.close()
    ctx.close()
    with pytest.raises(ClosedError, match="closed"):
        ctx.decode(Batch(1))
    m = Model(default_model_path(), vocab_only=True)
    m.close()
    m.close()
    with pytest.raises(HeliosError, match="closed"):
        _ = m.description


def test_vocab_only_model_cannot_make_a_context():
    with Model(default_model_path(), vocab_only=True) as m:
        with pytest.raises(ContextError, match="vocab_only"):
            Context(m)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "absent.gguf", "not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.gguf", b""), "not a GGUF file"),
        (lambda d: _write(d / "text.gguf", b"hello, this is not a model\n" * 10), "not a GGUF file"),
        (lambda d: _write(d / "header.gguf", b"GGUF\x03\x00"), "truncated"),
        (lambda d: _truncated_copy(d / "cut.gguf", 1_000_000), "could not load"),
        (lambda d: _truncated_copy(d / "cut-header.gguf", 4096), "could not load"),
    ],
    ids=["missing", "directory", "empty", "text", "short-header", "truncated-weights", "truncated-metadata"],
)
def test_bad_model_files_give_clear_errors_not_crashes(tmp_path, make, message):
    with pytest.raises(ModelLoadError, match=message):
        Model(make(tmp_path))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated_copy(path, size: int):
    with default_model_path().open("rb") as f:
        path.write_bytes(f.read(size))
    return path


def _fill(ctx: Context, batch: Batch, seq_id: int, n: int) -> None:
    start = ctx.seq_pos_max(seq_id) + 1
    for first in range(start, start + n, batch.capacity):
        count = min(batch.capacity, start + n - first)
        batch.clear()
        batch.add(list(range(1000 + first, 1000 + first + count)), first, seq_id, logits_last=True)
        ctx.decode(batch)


def test_a_sequence_keeps_its_prefix_while_another_reuses_freed_cells(model):
    # Gemma 3's sliding-window layers attend 512 tokens back. In one unified cache llama.cpp
    # hands the cells of a sequence's older tokens to the next sequence that needs room, so
    # sequence 0 would start at position 100 here; each sequence's own stream (the default) keeps it.
    with Context(model, n_ctx=2 * 1024, n_seq_max=2, n_batch=512, n_threads=THREADS) as ctx:
        batch = Batch(512)
        _fill(ctx, batch, 1, 100)
        _fill(ctx, batch, 0, 900)
        ctx.seq_rm(1, -1, -1)
        _fill(ctx, batch, 1, 200)
        assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, 899)
