"""M-RoPE media (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): images that take fewer positions than rows.

The model and projector are benchmarks/harness/qwen2vl.py's and mmproj.py's tiny random
ones. The reference is llama.cpp's own path: libmtmd's mtmd_helper_eval_chunks decoding
the same chunks into a second context. A 64 x 32 PNG becomes 4 x 2 merged tokens, which
take max(4, 2) = 4 positions: every later token sits 4 positions before its index.
"""

from __future__ import annotations

import base64
import ctypes

import httpx
import numpy as np
import pytest

from benchmarks.harness.media import png
from benchmarks.harness.mmproj import write_qwen2vl_mmproj
from benchmarks.harness.qwen2vl import write_qwen2vl_model
from helios_core import _llama, _mtmd, media_prompt, media_step
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.engine import Engine, Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.kvcache import Positions, Span
from helios_core.model import Model
from helios_core.projector import Projector
from helios_core.prompt_cache import PromptCache
from helios_core.sequence import GenerationParams
from tests.conftest import LOGIT_TOLERANCE, PATIENCE, THREADS, assert_logits_close, teacher_forced
from tests.server_process import ServerProcess

WIDE = (64, 32)  # pixels: 4 x 2 merged tokens, 4 positions
TOKENS, POSITIONS = 8, 4


@pytest.fixture(scope="module")
def qwen_files(tmp_path_factory):
    """The tiny qwen2vl text model's path and its projector's."""
    folder = tmp_path_factory.mktemp("qwen2vl")
    return write_qwen2vl_model(folder / "model.gguf"), write_qwen2vl_mmproj(folder / "mmproj.gguf")


@pytest.fixture(scope="module")
def qwen(qwen_files):
    with Model(qwen_files[0]) as model:
        with Projector(model, qwen_files[1], n_threads=THREADS) as projector:
            yield model, projector


@pytest.fixture
def engine(qwen):
    with Context(qwen[0], n_ctx=512, n_seq_max=2, n_threads=THREADS) as ctx:
        engine = Engine(ctx)
        yield engine
        engine.close()


def text_of(projector, tail: str = "and say what it is:") -> str:
    return f"Look at {projector.marker} {tail}"


def prompt_of(projector, seed: int = 1, tail: str = "and say what it is:") -> media_prompt.MediaPrompt:
    return media_prompt.build(projector, text_of(projector, tail), [png(*WIDE, seed=seed)], n_ubatch=512)


def next_logits(engine: Engine, prompt) -> tuple[np.ndarray, object]:
    captured: list[np.ndarray] = []
    generation = engine.generate(prompt, teacher_forced([0], captured))
    generation.text()
    return captured[0], generation


def llama_cpp_logits(qwen, seed: int = 1, tail: str = "and say what it is:") -> tuple[np.ndarray, int]:
    """The next-token logits of llama.cpp's own path (mtmd_helper_eval_chunks), and the position it ends at."""
    model, projector = qwen
    chunks = projector.tokenize(text_of(projector, tail), [projector.bitmap(png(*WIDE, seed=seed))])
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        n_past = _llama.llama_pos(0)
        handle = ctx.handle()
        code = _mtmd.mtmd_helper_eval_chunks(
            projector.handle().ptr, handle.ptr, chunks.ptr, 0, 0, ctx.n_batch, True, ctypes.byref(n_past)
        )
        assert code == 0
        row = (ctypes.c_float * ctx.n_vocab).from_address(_llama.llama_get_logits_ith(handle.ptr, -1))
        return np.frombuffer(row, dtype=np.float32).copy(), n_past.value


def seq_pos_max(engine: Engine) -> int:
    return max(engine.scheduler.runner.ctx.seq_pos_max(slot.cache.seq_id) for slot in engine.scheduler.slots)


def test_a_qwen2vl_projector_is_accepted_and_places_with_mrope(qwen):
    _, projector = qwen
    assert projector.mrope and projector.modalities == ["image"]


def test_an_image_takes_the_longer_side_of_its_token_grid_in_positions(qwen):
    [chunk] = prompt_of(qwen[1]).chunks
    assert (chunk.n_tokens, chunk.n_pos, chunk.mrope) == (TOKENS, POSITIONS, True)


def test_image_rows_carry_libmtmds_temporal_row_and_column_positions(qwen):
    _, projector = qwen
    [chunk] = prompt_of(projector).chunks
    planes = projector.positions(chunk.chunk.ptr, 10, range(TOKENS)).reshape(4, TOKENS)
    assert planes.tolist() == [[10] * 8, [10, 10, 10, 10, 11, 11, 11, 11], [10, 11, 12, 13] * 2, [0] * 8]


def test_the_text_after_an_image_sits_at_its_start_plus_n_pos(engine, qwen):
    prompt = prompt_of(qwen[1])
    next_logits(engine, prompt)
    assert seq_pos_max(engine) == len(prompt) - 1 - (TOKENS - POSITIONS)


def test_next_token_logits_after_an_image_match_llama_cpps_own_path(engine, qwen):
    expected, n_past = llama_cpp_logits(qwen)
    got, _ = next_logits(engine, prompt_of(qwen[1]))
    assert seq_pos_max(engine) == n_past - 1
    assert_logits_close([got], [expected])


def test_image_rows_placed_one_position_each_would_give_other_logits(qwen):
    """What helios did before M-RoPE: the comparison above would catch it."""
    model, projector = qwen
    prompt = prompt_of(projector)
    [chunk] = prompt.chunks
    expected, _ = llama_cpp_logits(qwen)
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        batch = Batch(ctx.n_batch)
        batch.set(prompt[: chunk.start], 0, logits_last=False)
        ctx.decode(batch)
        embd = projector.encode(chunk.chunk.ptr, chunk.n_tokens)
        rows = np.arange(chunk.start, chunk.end, dtype=np.int32)
        media_step.decode_embeddings(ctx, embd, np.tile(rows, 4), 0, non_causal=False)
        batch.set(prompt[chunk.end :], chunk.end)
        ctx.decode(batch)
        naive = ctx.logits(-1).copy()
    assert float(np.abs(naive - expected).max()) > 2 * LOGIT_TOLERANCE


def test_the_same_image_next_turn_is_reused_and_its_continuation_placed_right(engine, qwen):
    _, projector = qwen
    first = prompt_of(projector, seed=2)
    next_logits(engine, first)
    tail = "and say what it is: a cat. And its colour?"
    got, generation = next_logits(engine, prompt_of(projector, seed=2, tail=tail))
    expected, n_past = llama_cpp_logits(qwen, seed=2, tail=tail)
    assert generation.usage.cached_tokens >= first.chunks[0].end
    assert seq_pos_max(engine) == n_past - 1
    assert_logits_close([got], [expected])


def test_another_image_in_the_next_turn_is_read_again(engine, qwen):
    next_logits(engine, prompt_of(qwen[1], seed=3))
    got, generation = next_logits(engine, prompt_of(qwen[1], seed=4))
    assert generation.usage.cached_tokens <= prompt_of(qwen[1]).chunks[0].start
    assert_logits_close([got], [llama_cpp_logits(qwen, seed=4)[0]])


def test_a_prefix_match_ending_inside_an_image_keeps_only_the_text_before_it(engine, qwen):
    prompt = prompt_of(qwen[1], seed=5)
    [chunk] = prompt.chunks
    next_logits(engine, prompt)
    scheduler = engine.scheduler
    cache = max((slot.cache for slot in scheduler.slots), key=lambda c: len(c.tokens))
    partial = list(prompt[: chunk.start + 3]) + list(prompt[chunk.end :])
    kept = engine.call(lambda s: cache.reuse(s.runner.ctx, partial)).result()
    assert kept == chunk.start
    assert scheduler.runner.ctx.seq_pos_max(cache.seq_id) == chunk.start - 1
    assert cache.positions.spans == []


def test_an_image_left_half_read_is_read_again_whole(qwen):
    model, projector = qwen
    prompt = prompt_of(projector, seed=6)
    [chunk] = prompt.chunks
    # n_batch 4: the image's 8 rows are read in two steps; the request is cancelled between them.
    with Context(model, n_ctx=512, n_batch=4, n_threads=THREADS) as ctx:
        scheduler = Scheduler(LlamaRunner(ctx))
        half = Request(list(prompt), GenerationParams(max_tokens=1), lambda event: None, media=prompt)
        scheduler.submit(half)
        cache = scheduler.slots[0].cache
        while len(cache.tokens) <= chunk.start:
            scheduler.step()
        assert chunk.start < len(cache.tokens) < chunk.end
        half.cancel()
        scheduler.step()
        captured: list[np.ndarray] = []
        again = prompt_of(projector, seed=6)
        events: list = []
        scheduler.submit(Request(list(again), teacher_forced([0], captured), events.append, media=again))
        while scheduler.has_work:
            scheduler.step()
        assert events[-1].usage.cached_tokens == chunk.start
        assert ctx.seq_pos_max(cache.seq_id) == len(prompt) - 1 - (TOKENS - POSITIONS)
    assert_logits_close(captured, [llama_cpp_logits(qwen, seed=6)[0]])


def test_a_prefix_restored_from_the_ram_tier_keeps_its_image_positions(qwen):
    model, projector = qwen
    tail = "and say what it is, in a long answer of many words:"
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        scheduler = Scheduler(LlamaRunner(ctx, prompt_cache=PromptCache(64 << 20)))
        captured: list[np.ndarray] = []

        def run(prompt, params) -> None:
            scheduler.submit(Request(list(prompt), params, lambda event: None, media=prompt))
            while scheduler.has_work:
                scheduler.step()

        run(prompt_of(projector, seed=7, tail=tail), teacher_forced([0], []))
        other = model.vocab.tokenize("Something else entirely, with no image in it at all, to push the slot out.")
        scheduler.submit(Request(other, GenerationParams(max_tokens=1), lambda event: None))
        while scheduler.has_work:
            scheduler.step()
        assert scheduler.runner.prompt_cache.stats.saves == 1
        run(prompt_of(projector, seed=7, tail=tail + " Go"), teacher_forced([0], captured))
        assert scheduler.runner.prompt_cache.stats.hits == 1
    expected, _ = llama_cpp_logits(qwen, seed=7, tail=tail + " Go")
    assert_logits_close(captured, [expected])


def test_positions_map_indices_past_two_mrope_images():
    positions = Positions([Span(2, 8, 4), Span(12, 6, 3)])
    assert [positions.pos(i) for i in (0, 2, 5, 10, 11, 12, 15, 18, 20)] == [0, 2, 2, 6, 7, 8, 8, 11, 13]
    assert [positions.cut(i) for i in (2, 5, 10, 13, 18)] == [2, 2, 10, 12, 18]


def test_a_served_qwen2vl_reuses_an_image_from_the_cache_with_the_same_logprobs(qwen_files):
    model, mmproj = qwen_files
    server = ServerProcess(
        *("--model", str(model), "--mmproj", str(mmproj), "--chat-template", "chatml"),
        *("--ctx-size", "512", "--parallel", "2"),
    )
    image = f"data:image/png;base64,{base64.b64encode(png(*WIDE, seed=8)).decode()}"
    parts = [{"type": "text", "text": "Describe the image."}, {"type": "image_url", "image_url": {"url": image}}]
    body = {"messages": [{"role": "user", "content": parts}], "max_tokens": 1, "temperature": 0}
    body |= {"logprobs": True, "top_logprobs": 10}
    try:
        answers = [httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=PATIENCE) for _ in range(2)]
    finally:
        server.stop()
    first, second = (answer.json() for answer in answers)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > TOKENS
    tops = [
        {tuple(alt["bytes"]): alt["logprob"] for alt in answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}
        for answer in (first, second)
    ]
    # By bytes: most of this vocabulary's tokens are single bytes, whose text is the same U+FFFD.
    # The tail of the top 10 may swap places within the tolerance.
    common = tops[0].keys() & tops[1].keys()
    assert len(common) >= 8 and all(abs(tops[0][t] - tops[1][t]) <= LOGIT_TOLERANCE for t in common)
