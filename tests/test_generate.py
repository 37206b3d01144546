"""The token loop on the default model: limits, stops, seeds, text, and KV-cache reuse."""

from __future__ import annotations

import numpy as np
import pytest

from helios_core import chat
from helios_core.context import Context
from helios_core.generate import GenerationParams, Generator

GREEDY = dict(temperature=0.0)


@pytest.fixture
def gen(model) -> Generator:
    g = Generator(model, n_ctx=1024, n_batch=128, n_threads=2)
    yield g
    g.ctx.close()


def fresh_generator(model, **kw) -> Generator:
    return Generator(model, Context(model, n_ctx=1024, n_batch=128, n_threads=2, **kw))


def test_max_tokens_ends_with_length(gen):
    g = gen.generate("Once upon a time", GenerationParams(max_tokens=7, **GREEDY))
    steps = list(g)
    assert len(steps) == 7 and g.usage.completion_tokens == 7
    assert steps[-1].finish_reason == "length" and all(s.finish_reason is None for s in steps[:-1])


def test_streamed_text_is_the_detokenized_completion(model, gen):
    g = gen.generate("List some emoji and accents:", GenerationParams(max_tokens=40, temperature=1.0, seed=5))
    text = g.text()
    generated = [t for t in g.sequence.generated.tolist() if not model.vocab.is_eog(t)]
    assert text == model.vocab.detokenize(generated)


def test_stop_string_ends_generation_and_is_not_returned(gen):
    free = gen.generate("The three primary colors are", GenerationParams(max_tokens=30, **GREEDY)).text()
    assert "\n" in free  # the greedy continuation has a newline to stop at
    g = gen.generate("The three primary colors are", GenerationParams(max_tokens=30, stop=["\n"], **GREEDY))
    assert g.text() == free.split("\n")[0]
    assert g.finish_reason == "stop"


def test_same_seed_same_text_other_seed_other_text(gen):
    def run(seed):
        params = GenerationParams(max_tokens=24, temperature=1.0, seed=seed)
        return gen.generate("My favourite animal is", params).text()

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_end_of_generation_token_stops_with_stop(model, gen):
    eot = model.vocab.tokenize("<end_of_turn>", add_special=False, parse_special=True)[0]
    force_eot = GenerationParams(max_tokens=20, logit_bias={eot: 100.0}, **GREEDY)
    g = gen.generate("Hello", force_eot)
    assert (g.text(), g.finish_reason, g.usage.completion_tokens) == ("", "stop", 1)


def test_logprobs_when_asked(gen):
    steps = list(gen.generate("The sky is", GenerationParams(max_tokens=3, logprobs=True, top_logprobs=3, **GREEDY)))
    for step in steps:
        assert step.logprob is not None and step.logprob <= 0
        assert len(step.top_logprobs) == 3
        assert step.top_logprobs[0].token == step.token  # greedy picks the top alternative


def test_prompt_longer_than_n_batch_is_decoded_in_chunks(model, gen):
    prompt = model.vocab.tokenize("word " * 300)
    assert len(prompt) > 2 * gen.ctx.n_batch
    before = gen.ctx.tokens_decoded
    gen.generate(prompt, GenerationParams(max_tokens=1, **GREEDY)).text()
    assert gen.ctx.tokens_decoded - before == len(prompt)


def test_prompt_that_fills_the_context_is_refused(model, gen):
    with pytest.raises(ValueError, match="the prompt has 1024 tokens, but the context holds 1024"):
        gen.generate([model.vocab.bos] * 1024)


def test_context_limit_ends_with_length(model):
    with Context(model, n_ctx=256, n_batch=256, n_threads=2) as ctx:
        prompt = [model.vocab.bos] + [100] * (ctx.n_ctx_seq - 7)  # room for 6 more tokens
        g = Generator(model, ctx).generate(prompt, GenerationParams(max_tokens=None, **GREEDY))
        list(g)
        assert g.finish_reason == "length" and g.usage.completion_tokens == 6


def tokens_decoded(gen: Generator, prompt, params) -> tuple[int, list[int]]:
    """(tokens passed to llama_decode for the prompt, generated tokens)."""
    before = gen.ctx.tokens_decoded
    g = gen.generate(prompt, params)
    first = next(g)
    decoded = gen.ctx.tokens_decoded - before
    return decoded, [first.token] + [s.token for s in g]


def test_kv_reuse_decodes_only_the_new_suffix(model, gen):
    base = model.vocab.tokenize("The history of the Roman Empire spans many centuries, and")
    extended = base + model.vocab.tokenize(" its emperors were", add_special=False)
    tokens_decoded(gen, base, GenerationParams(max_tokens=4, **GREEDY))
    cached = gen.cache.common_prefix(extended)
    decoded, _ = tokens_decoded(gen, extended, GenerationParams(max_tokens=4, **GREEDY))
    assert cached >= len(base)
    assert decoded == len(extended) - cached


def test_an_identical_prompt_redecodes_only_its_last_token(model, gen):
    prompt = model.vocab.tokenize("Repeat after me: the quick brown fox")
    first = gen.generate(prompt, GenerationParams(max_tokens=5, **GREEDY))
    first_text = first.text()
    decoded, tokens = tokens_decoded(gen, prompt, GenerationParams(max_tokens=5, **GREEDY))
    assert decoded == 1
    assert model.vocab.detokenize(tokens) == first_text


@pytest.mark.parametrize(
    "prompts",
    [
        ["The capital of France is", "The capital of France is Paris. The capital of Spain is"],
        ["def fibonacci(n):\n", "def fibonacci(n):\n    if n < 2:\n        return n\n"],
        ["Water boils at", "Water freezes at"],
    ],
    ids=["extend", "code", "branch"],
)
def test_greedy_output_with_reuse_is_token_identical_to_a_fresh_context(model, gen, prompts):
    params = GenerationParams(max_tokens=16, **GREEDY)
    for prompt in prompts:
        reused = gen.generate(prompt, params)
        reused_tokens = [s.token for s in reused]
        fresh = fresh_generator(model)
        fresh_tokens = [s.token for s in fresh.generate(prompt, params)]
        fresh.ctx.close()
        assert reused_tokens == fresh_tokens
    assert reused.usage.cached_tokens > 0


def test_a_follow_up_chat_turn_decodes_only_the_new_turn(model, gen):
    template = chat.template_for(model)
    turn1 = [{"role": "user", "content": "Name a fruit."}]
    prompt1 = model.vocab.tokenize(chat.apply_template(template, turn1), parse_special=True)
    g = gen.generate(prompt1, GenerationParams(max_tokens=6, **GREEDY))
    answer = g.text()
    turn2 = turn1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And a vegetable?"}]
    prompt2 = model.vocab.tokenize(chat.apply_template(template, turn2), parse_special=True)
    held = len(gen.cache.tokens)  # turn 1's prompt and the answer tokens that were decoded
    decoded, _ = tokens_decoded(gen, prompt2, GenerationParams(max_tokens=2, **GREEDY))
    assert held == len(prompt1) + 5
    assert decoded == len(prompt2) - held


def test_sliding_window_cache_that_forgot_the_prefix_is_not_reused(model):
    # Without swa_full, Gemma 3's window layers keep 512 positions plus one ubatch.
    with Context(model, n_ctx=2048, n_batch=64, n_threads=2, swa_full=False) as ctx:
        gen = Generator(model, ctx)
        long_prompt = model.vocab.tokenize("alpha beta gamma delta " * 200)
        list(gen.generate(long_prompt, GenerationParams(max_tokens=1, **GREEDY)))
        assert ctx.seq_pos_min(0) > 0
        branch = long_prompt[:50] + model.vocab.tokenize(" omega", add_special=False)
        g = gen.generate(branch, GenerationParams(max_tokens=8, **GREEDY))
        tokens = [s.token for s in g]
        assert g.usage.cached_tokens == 0
    fresh = fresh_generator(model)
    assert [s.token for s in fresh.generate(branch, GenerationParams(max_tokens=8, **GREEDY))] == tokens
    fresh.ctx.close()


def test_custom_sampler_and_processor_are_plain_callables(model, gen):
    seen = []

    def never_the_letter_e(logits, state):
        seen.append(state.step)
        return logits  # processors may return their input unchanged

    def second_best(logits, state):
        return int(np.argsort(logits)[-2])

    g = gen.generate("Hello", GenerationParams(max_tokens=3, sampler=second_best, processors=[never_the_letter_e]))
    steps = list(g)
    assert seen == [0, 1, 2]
    assert all(isinstance(s.token, int) for s in steps)
