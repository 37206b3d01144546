"""Images through libmtmd into the engine: the projector, prompt chunking, media reading and its prefix cache.

The projector is benchmarks/harness/mmproj.py's tiny random one over the default model: what it
"sees" is noise, so these tests check plumbing (counts, positions, logits that move or
match within LOGIT_TOLERANCE, cached tokens), never what the model says.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.harness.media import MTMD_MEDIA, SVG, png, truncated
from benchmarks.harness.mmproj import AUDIO_TOKENS, TOKENS_PER_IMAGE, write_mmproj
from helios_core import media_prompt
from helios_core.context import Context
from helios_core.engine import Engine, Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.errors import ClosedError, ModelLoadError
from helios_core.projector import MediaError, Projector
from helios_core.sequence import GenerationParams
from tests.conftest import LOGIT_TOLERANCE, THREADS, assert_logits_close, teacher_forced


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory):
    return write_mmproj(tmp_path_factory.mktemp("mmproj") / "tiny.gguf")


@pytest.fixture(scope="module")
def projector(model, mmproj):
    with Projector(model, mmproj, n_threads=THREADS) as p:
        yield p


@pytest.fixture(scope="module")
def hearing(model, tmp_path_factory):
    """A projector with an audio encoder beside the vision one."""
    path = write_mmproj(tmp_path_factory.mktemp("mmproj") / "av.gguf", audio=True)
    with Projector(model, path, n_threads=THREADS) as p:
        yield p


@pytest.fixture(scope="module")
def gemma3(model, tmp_path_factory):
    """Gemma 3's own projector type: images wrapped in <start_of_image> ... <end_of_image>, read non-causally."""
    path = write_mmproj(tmp_path_factory.mktemp("mmproj") / "gemma3.gguf", gemma3=True)
    with Projector(model, path, n_threads=THREADS) as p:
        yield p


@pytest.fixture
def engine(model):
    with Context(model, n_ctx=512, n_seq_max=2, n_threads=THREADS) as ctx:
        engine = Engine(ctx)
        yield engine
        engine.close()


def prompt_with(projector, *images: bytes) -> media_prompt.MediaPrompt:
    markers = " ".join(projector.marker for _ in images)
    return media_prompt.build(projector, f"Look at {markers} and say what it is:", list(images), n_ubatch=512)


def next_logits(engine: Engine, prompt) -> np.ndarray:
    captured: list[np.ndarray] = []
    engine.generate(prompt, teacher_forced([0], captured)).text()
    return captured[0]


def test_the_projector_serves_images_only(projector):
    assert projector.modalities == ["image"]


def test_an_image_is_one_chunk_of_its_tokens_between_text_runs(projector):
    prompt = prompt_with(projector, MTMD_MEDIA.joinpath("test-1.jpeg").read_bytes())
    [chunk] = prompt.chunks
    assert (chunk.kind, chunk.n_tokens, chunk.n_pos) == ("image", TOKENS_PER_IMAGE, TOKENS_PER_IMAGE)
    assert prompt.media_tokens == TOKENS_PER_IMAGE
    assert all(t < 0 for t in prompt[chunk.start : chunk.end])
    assert prompt[chunk.start - 1] >= 0 and prompt[chunk.end] >= 0
    assert prompt.text_ahead(0) == chunk.start


def test_the_same_bytes_give_the_same_placeholders_and_other_bytes_others(projector):
    a, b = prompt_with(projector, png(seed=1)), prompt_with(projector, png(seed=2))
    assert list(prompt_with(projector, png(seed=1))) == list(a)
    assert a[a.chunks[0].start] != b[b.chunks[0].start]


def test_two_images_are_two_chunks(projector):
    prompt = prompt_with(projector, png(seed=1), png(seed=2))
    assert [c.n_tokens for c in prompt.chunks] == [TOKENS_PER_IMAGE] * 2


@pytest.mark.parametrize("data", [b"not an image", SVG, truncated(png())], ids=["garbage", "svg", "truncated-png"])
def test_bytes_libmtmd_cannot_decode_are_a_media_error(projector, data):
    with pytest.raises(MediaError):
        prompt_with(projector, data)


def test_a_marker_count_that_does_not_match_the_items_is_a_media_error(projector):
    with pytest.raises(MediaError):
        media_prompt.build(projector, "no marker here", [png()], n_ubatch=512)


def test_a_prompt_ending_in_media_is_refused(projector):
    with pytest.raises(MediaError, match="end with text"):
        media_prompt.build(projector, f"Look: {projector.marker}", [png()], n_ubatch=512)


def test_two_images_give_different_next_token_logits(engine, projector):
    a = next_logits(engine, prompt_with(projector, png(seed=1)))
    b = next_logits(engine, prompt_with(projector, png(seed=2)))
    assert float(np.abs(a - b).max()) > 2 * LOGIT_TOLERANCE


def test_the_same_image_read_fresh_or_from_the_cache_gives_the_same_logits(engine, projector):
    fresh = next_logits(engine, prompt_with(projector, png(seed=3)))
    again = prompt_with(projector, png(seed=3))
    request_logits = next_logits(engine, again)
    assert_logits_close([request_logits], [fresh])


def test_the_image_kv_is_reused_by_the_next_turn(engine, projector):
    first = prompt_with(projector, png(seed=4))
    engine.generate(first, teacher_forced([0], [])).text()
    generation = engine.generate(prompt_with(projector, png(seed=4)), teacher_forced([0], []))
    generation.text()
    assert generation.usage.cached_tokens >= first.chunks[0].end
    assert engine.scheduler.stats.prompt_tokens_decoded < 2 * len(first)


def test_an_image_read_in_pieces_gives_the_logits_of_one_read_whole(model, projector):
    prompt = prompt_with(projector, png(seed=12))
    whole = []
    with Context(model, n_ctx=512, n_threads=THREADS) as ctx:
        engine = Engine(ctx)
        whole = next_logits(engine, prompt)
        engine.close()
    # n_batch 8: the image's 16 rows are decoded in two steps, the text around it in pieces too.
    with Context(model, n_ctx=512, n_batch=8, n_threads=THREADS) as ctx:
        engine = Engine(ctx)
        pieces = next_logits(engine, prompt_with(projector, png(seed=12)))
        engine.close()
    assert_logits_close([pieces], [whole])


def test_a_running_stream_gets_a_token_every_step_while_an_image_is_read(model, projector):
    with Context(model, n_ctx=512, n_seq_max=2, n_threads=THREADS) as ctx:
        scheduler = Scheduler(LlamaRunner(ctx), prefill_per_step=8)
        streamed: list = []
        running = Request(
            model.vocab.tokenize("Once upon a time"), GenerationParams(max_tokens=60, ignore_eos=True), streamed.append
        )
        scheduler.submit(running)
        while not streamed:
            scheduler.step()
        pictured = prompt_with(projector, png(seed=13))
        events: list = []
        scheduler.submit(Request(list(pictured), GenerationParams(max_tokens=1), events.append, media=pictured))
        steps = 0
        while not events:  # the image's prompt is read in bounded steps (an encode, two 8-row decodes, text)
            before = len(streamed)
            scheduler.step()
            steps += 1
            assert len(streamed) == before + 1, f"step {steps} left the running stream without a token"
        assert steps >= 4


def test_a_gemma3_image_is_wrapped_in_its_markers_and_read_non_causally(model, gemma3):
    prompt = prompt_with(gemma3, png(seed=1))
    [chunk] = prompt.chunks
    assert chunk.non_causal and chunk.n_tokens == TOKENS_PER_IMAGE
    before, after = model.vocab.token_to_piece(prompt[chunk.start - 1]), model.vocab.token_to_piece(prompt[chunk.end])
    assert (before, after) == (b"<start_of_image>", b"<end_of_image>")


def test_gemma3_images_move_the_logits_and_the_same_one_matches_from_the_cache(engine, gemma3):
    a = next_logits(engine, prompt_with(gemma3, png(seed=21)))
    b = next_logits(engine, prompt_with(gemma3, png(seed=22)))
    again = next_logits(engine, prompt_with(gemma3, png(seed=21)))
    assert float(np.abs(a - b).max()) > 2 * LOGIT_TOLERANCE
    assert_logits_close([again], [a])


def test_a_non_causal_image_longer_than_n_ubatch_is_refused(gemma3):
    with pytest.raises(MediaError, match="--ubatch"):
        media_prompt.build(gemma3, f"Look: {gemma3.marker} now", [png()], n_ubatch=TOKENS_PER_IMAGE - 1)


def test_an_mp3_is_one_audio_chunk_of_a_30_second_window(hearing):
    assert hearing.modalities == ["image", "audio"] and hearing.audio_sample_rate == 16000
    data = (MTMD_MEDIA / "test-2.mp3").read_bytes()
    prompt = media_prompt.build(hearing, f"Listen: {hearing.marker} Who speaks?", [data], n_ubatch=512)
    [chunk] = prompt.chunks
    assert (chunk.kind, chunk.n_tokens) == ("audio", AUDIO_TOKENS)


@pytest.mark.slow
def test_an_mp3_is_read_through_the_engine(model, hearing):
    data = (MTMD_MEDIA / "test-2.mp3").read_bytes()
    prompt = media_prompt.build(hearing, f"Listen: {hearing.marker} Who speaks?", [data], n_ubatch=512)
    with Context(model, n_ctx=1024, n_threads=THREADS) as ctx:
        engine = Engine(ctx)
        generation = engine.generate(prompt, teacher_forced([0], []))
        generation.text()
        engine.close()
    assert generation.usage.prompt_tokens == len(prompt) > AUDIO_TOKENS


def test_a_missing_projector_file_is_one_line(model, tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as raised:
        Projector(model, tmp_path / "none.gguf")
    assert "\n" not in str(raised.value)


def test_a_file_that_is_no_projector_is_one_line(model, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="could not load the projector") as raised:
        Projector(model, bad)
    assert "\n" not in str(raised.value)


def test_a_closed_projector_refuses_use(model, mmproj):
    projector = Projector(model, mmproj, n_threads=THREADS)
    projector.close()
    with pytest.raises(ClosedError):
        projector.bitmap(png())
