"""The RAM tier (helios_core/prompt_cache.py): prefixes saved when their slot is reused, restored when they return."""

from __future__ import annotations

import os
from collections import deque

import numpy as np

from helios_core.context import Context
from helios_core.engine import Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.generate import GenerationParams
from helios_core.prompt_cache import SAVE_MIN_DROPPED, Entry, PromptCache
from tests.conftest import THREADS, assert_logits_close, teacher_forced

MiB = 1024 * 1024


def scheduler(model, *, cache: PromptCache | None, swa_full: bool = True, n_ctx: int = 1024) -> Scheduler:
    ctx = Context(model, n_ctx=n_ctx, n_seq_max=1, n_batch=256, n_threads=THREADS, swa_full=swa_full)
    return Scheduler(LlamaRunner(ctx, prompt_cache=cache), n_ctx_per_seq=n_ctx)


def run(s: Scheduler, prompt: list[int], params: GenerationParams) -> Request:
    request = Request(list(prompt), params, deque().append)
    s.submit(request)
    while s.has_work:
        s.step()
    return request


def long_prompt(model, topic: str, n: int) -> list[int]:
    """A prompt of `n` tokens about `topic`, with BOS."""
    words = model.vocab.tokenize(f" {topic} and what it means for all who read about it." * 200, add_special=False)
    return model.vocab.tokenize("")[:1] + words[: n - 1]


def test_logits_after_a_restore_equal_a_fresh_decode_past_the_sliding_window(model):
    """Gemma 3's sliding window is 512 tokens: a 600-token prefix restored and extended reads like a fresh one."""
    assert 0 < model.n_swa < 600
    prefix = long_prompt(model, "the history of sailing ships", 600)
    prompt = prefix + model.vocab.tokenize(" What happened next?", add_special=False)
    script = model.vocab.tokenize(" and so the voyage went on", add_special=False)[:6]
    fresh: list[np.ndarray] = []
    s = scheduler(model, cache=None)
    run(s, prompt, teacher_forced(script, fresh))
    s.runner.ctx.close()

    restored: list[np.ndarray] = []
    cache = PromptCache(256 * MiB)
    s = scheduler(model, cache=cache)
    run(s, prefix, GenerationParams(max_tokens=1, temperature=0))
    run(s, long_prompt(model, "a recipe for bread", 64), GenerationParams(max_tokens=1, temperature=0))
    assert cache.stats.saves == 1  # the first prefix left its slot for the tier
    again = run(s, prompt, teacher_forced(script, restored))
    s.runner.ctx.close()
    assert cache.stats.hits == 1
    assert again.usage.cached_tokens == len(prefix)  # restored, and counted as cached
    assert cache.stats.tokens_restored == len(prefix)
    assert_logits_close(restored, fresh)


def test_a_sliding_window_entry_is_not_restored_for_a_prompt_that_leaves_it_early(model):
    """A restored window would miss positions the cut-short prompt attends to: the prompt is read again instead."""
    prefix = long_prompt(model, "the history of sailing ships", 100)
    cache = PromptCache(256 * MiB)
    s = scheduler(model, cache=cache, n_ctx=512)
    run(s, prefix, GenerationParams(max_tokens=1, temperature=0))
    run(s, long_prompt(model, "a recipe for bread", 64), GenerationParams(max_tokens=1, temperature=0))
    early = prefix[:90] + model.vocab.tokenize(" What happened next?", add_special=False)
    again = run(s, early, GenerationParams(max_tokens=1, temperature=0))
    s.runner.ctx.close()
    assert cache.stats.hits == 0 and again.usage.cached_tokens <= 1  # BOS, from the slot


def test_a_conversation_whose_answer_comes_back_re_rendered_still_gets_its_prompt_restored(model, no_eog):
    """On a sliding-window model a slot is saved as its last prompt, without the answer generated after it."""
    prompt = long_prompt(model, "the history of sailing ships", 100)
    cache = PromptCache(256 * MiB)
    s = scheduler(model, cache=cache, n_ctx=512)
    answered = run(s, prompt, GenerationParams(max_tokens=40, temperature=0, logit_bias=no_eog))
    assert answered.usage.completion_tokens == 40
    run(s, long_prompt(model, "a recipe for bread", 64), GenerationParams(max_tokens=1, temperature=0))
    next_turn = prompt + model.vocab.tokenize(" [the answer, as the client wrote it back] Why?", add_special=False)
    again = run(s, next_turn, GenerationParams(max_tokens=1, temperature=0))
    s.runner.ctx.close()
    assert cache.stats.hits == 1 and again.usage.cached_tokens == len(prompt)


def test_each_adapter_set_gets_back_its_own_prefix_and_never_another_sets(model, tmp_path):
    from benchmarks.harness import write_adapter
    from helios_core import lora

    adapter = lora.Adapter(model, write_adapter(tmp_path / "a.gguf", model, seed=0))
    with_a = lora.adapter_set([(adapter, 1.0)])
    prefix = long_prompt(model, "the history of sailing ships", 100)
    more = prefix + model.vocab.tokenize(" What happened next?", add_special=False)
    cache = PromptCache(256 * MiB)
    s = scheduler(model, cache=cache, n_ctx=512)
    run(s, prefix, GenerationParams(max_tokens=1, temperature=0, lora=with_a))
    run(s, long_prompt(model, "a recipe for bread", 64), GenerationParams(max_tokens=1, temperature=0))
    base = run(s, more, GenerationParams(max_tokens=1, temperature=0))  # the base model: the set's entry is not its
    assert cache.stats.hits == 0 and base.usage.cached_tokens <= 1
    run(s, long_prompt(model, "a recipe for bread", 64), GenerationParams(max_tokens=1, temperature=0))
    again = run(s, more, GenerationParams(max_tokens=1, temperature=0, lora=with_a))
    s.runner.ctx.close()
    assert cache.stats.hits == 1 and again.usage.cached_tokens == len(prefix)


def test_a_prefix_is_restored_only_under_the_adapter_set_it_was_read_under():
    cache = PromptCache(MiB)
    tokens = np.arange(100, dtype=np.int32)
    set_a, set_b = (("adapter-a", 1.0),), (("adapter-b", 1.0),)
    cache.add(Entry(tokens, set_a, bytearray(1000)))
    assert cache.lookup(list(range(120)), set_a)[1] == 100
    assert cache.lookup(list(range(120)), set_b) == (None, 0)
    assert cache.lookup(list(range(120)), ()) == (None, 0)


def test_a_shorter_prefix_of_a_held_entry_is_not_held_twice():
    cache = PromptCache(MiB)
    cache.add(Entry(np.arange(50, dtype=np.int32), (), bytearray(500)))
    longer = cache.add(Entry(np.arange(80, dtype=np.int32), (), bytearray(800)))
    assert list(cache.entries()) == [longer]
    assert cache.stats.bytes == longer.nbytes


def test_the_least_recently_used_entry_goes_first_and_the_bound_holds():
    size = 10_000
    cache = PromptCache(5 * size)
    for i in range(40):
        cache.add(Entry(np.array([1, 2 + i] * 20, dtype=np.int32), (), bytearray(size)))
        assert cache.stats.bytes <= cache.max_bytes
        kept, _ = cache.lookup([1, 2, 1, 2])  # the first entry, used at every turn: it outlives the others
        cache.touch(kept)
    held = list(cache.entries())
    assert len(held) == 4 and held[-1].tokens[1] == 2
    assert cache.stats.evictions == 36


def test_a_next_turn_that_drops_a_few_tokens_saves_nothing(model):
    cache = PromptCache(256 * MiB)
    s = scheduler(model, cache=cache, n_ctx=512)
    prompt = long_prompt(model, "a recipe for bread", 100)
    run(s, prompt, GenerationParams(max_tokens=1, temperature=0))
    turn = prompt[: -SAVE_MIN_DROPPED // 2] + model.vocab.tokenize(" Then what?", add_special=False)
    run(s, turn, GenerationParams(max_tokens=1, temperature=0))
    s.runner.ctx.close()
    assert cache.stats.saves == 0 and cache.stats.misses == 2


def test_the_bound_holds_under_a_stream_of_distinct_prefixes_with_rss_measured(model):
    """12 prefixes of 128 tokens (about 2.3 MiB of state each, 25 MiB in all) through a tier of 4 MiB."""
    cache = PromptCache(4 * MiB)
    s = scheduler(model, cache=cache, n_ctx=512)
    topics = [f"topic number {i} of a long list" for i in range(12)]
    run(s, long_prompt(model, topics[0], 128), GenerationParams(max_tokens=1, temperature=0))
    before = _rss()
    for topic in topics[1:]:
        run(s, long_prompt(model, topic, 128), GenerationParams(max_tokens=1, temperature=0))
        assert cache.stats.bytes <= cache.max_bytes
    grown = _rss() - before
    s.runner.ctx.close()
    assert cache.stats.saves == 11 and cache.stats.evictions >= 9
    assert grown < 12 * MiB, f"RSS grew {grown / MiB:.1f} MiB"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
