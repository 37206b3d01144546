"""The token loop on the default model: limits, stops, seeds, text, and KV-cache reuse."""

from __future__ import annotations

import numpy as np
import pytest

from helios_core import chat
from helios_core.context import Context
from helios_core.generate import GenerationParams, Generator
from tests.conftest import THREADS, assert_logits_close, greedy_captured, teacher_forced

GREEDY = dict(temperature=0.0)


@pytest.fixture
def gen(model) -> Generator:
    g = Generator(model, n_ctx=1024, n_batch=128, n_threads=THREADS)
    yield g
    g.ctx.close()


def fresh_generator(model, **kw) -> Generator:
    return Generator(model, Context(model, n_ctx=1024, n_batch=128, n_threads=THREADS, **kw))


def fresh_run(model, prompt, params: GenerationParams):
    """Run on a new context: runs compared this way decode in the same batch shapes from the same (empty) cache."""
    g = fresh_generator(model)
    try:
        generation = g.generate(prompt, params)
        return generation.text(), generation
    finally:
        g.ctx.close()


def test_max_tokens_ends_with_length(gen, no_eog):
    g = gen.generate("Once upon a time", GenerationParams(max_tokens=7, logit_bias=no_eog, **GREEDY))
    steps = list(g)
    assert len(steps) == 7 and g.usage.completion_tokens == 7
    assert steps[-1].finish_reason == "length" and all(s.finish_reason is None for s in steps[:-1])


def test_streamed_text_is_the_detokenized_completion(model, gen):
    g = gen.generate("List some emoji and accents:", GenerationParams(max_tokens=40, temperature=1.0, seed=5))
    text = g.text()
    generated = [t for t in g.sequence.generated.tolist() if not model.vocab.is_eog(t)]
    assert text == model.vocab.detokenize(generated)


def test_stop_string_ends_generation_and_is_not_returned(model, no_eog):
    prompt, settings = "The three primary colors are", dict(max_tokens=30, logit_bias=no_eog, **GREEDY)
    free, _ = fresh_run(model, prompt, GenerationParams(**settings))
    stop = free.split()[2]  # a word the unstopped run is known to write, whatever this CPU's floats chose
    text, g = fresh_run(model, prompt, GenerationParams(stop=[stop], **settings))
    assert text == free.split(stop)[0]
    assert g.finish_reason == "stop"


def test_same_seed_same_text_other_seed_other_text(model, no_eog):
    def run(seed):
        params = GenerationParams(max_tokens=24, temperature=1.0, seed=seed, logit_bias=no_eog)
        return fresh_run(model, "My favourite animal is", params)[0]

    first = run(11)
    assert run(11) == first
    assert run(12) != first


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


def test_context_limit_ends_with_length(model, no_eog):
    with Context(model, n_ctx=256, n_batch=256, n_threads=THREADS) as ctx:
        prompt = [model.vocab.bos] + [100] * (ctx.n_ctx_seq - 7)  # room for 6 more tokens
        g = Generator(model, ctx).generate(prompt, GenerationParams(max_tokens=None, logit_bias=no_eog, **GREEDY))
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
    cached = gen.cache.common_prefix(extended)  # more than base if the completion began like the extension
    decoded, _ = tokens_decoded(gen, extended, GenerationParams(max_tokens=4, **GREEDY))
    assert cached >= len(base)
    assert decoded == len(extended) - min(cached, len(extended) - 1)  # the last prompt token is always decoded


def test_an_identical_prompt_redecodes_only_its_last_token(model, gen):
    prompt = model.vocab.tokenize("Repeat after me: the quick brown fox")
    first_logits, again_logits = [], []
    tokens = [s.token for s in gen.generate(prompt, greedy_captured(5, first_logits))]
    decoded, _ = tokens_decoded(gen, prompt, teacher_forced(tokens, again_logits))
    assert decoded == 1
    # Along the same tokens, the reused cache gives the logits the first run had.
    assert_logits_close(again_logits, first_logits)


@pytest.mark.parametrize(
    "prompts",
    [
        ["The capital of France is", "The capital of France is Paris. The capital of Spain is"],
        ["def fibonacci(n):\n", "def fibonacci(n):\n    if n < 2:\n        return n\n"],
        ["Water boils at", "Water freezes at"],
    ],
    ids=["extend", "code", "branch"],
)
def test_logits_with_reuse_match_a_fresh_context(model, gen, prompts):
    # A reused prefix means the prompt is decoded in other batch shapes than in a
    # fresh context, which moves logits a little on CPU: compare the two runs along
    # the same tokens (teacher-forced) within the tolerance, not their greedy texts.
    for prompt in prompts:
        reused_logits, fresh_logits = [], []
        reused = gen.generate(prompt, greedy_captured(16, reused_logits))
        tokens = [s.token for s in reused]
        fresh_run(model, prompt, teacher_forced(tokens, fresh_logits))
        assert_logits_close(reused_logits, fresh_logits)
    assert reused.usage.cached_tokens > 0


def test_a_follow_up_chat_turn_decodes_only_the_new_turn(model, gen):
    template = chat.template_for(model)
    turn1 = [{"role": "user", "content": "Name a fruit."}]
    prompt1 = model.vocab.tokenize(chat.apply_template(template, turn1), parse_special=True)
    # A scripted answer tokenizes back to the tokens that were generated, whatever this CPU would have said.
    answer = model.vocab.tokenize("An apple.", add_special=False)
    g = gen.generate(
        prompt1, GenerationParams(max_tokens=len(answer), sampler=lambda logits, state: answer[state.step])
    )
    turn2 = turn1 + [{"role": "assistant", "content": g.text()}, {"role": "user", "content": "And a vegetable?"}]
    prompt2 = model.vocab.tokenize(chat.apply_template(template, turn2), parse_special=True)
    assert prompt2[: len(prompt1) + len(answer)] == prompt1 + answer
    held = len(gen.cache.tokens)  # turn 1's prompt and the answer tokens that were decoded
    decoded, _ = tokens_decoded(gen, prompt2, GenerationParams(max_tokens=2, **GREEDY))
    assert held == len(prompt1) + len(answer) - 1  # the last answer token was sampled, never decoded
    assert decoded == len(prompt2) - held


def test_sliding_window_cache_that_forgot_the_prefix_is_not_reused(model):
    # Without swa_full, Gemma 3's window layers keep 512 positions plus one ubatch.
    with Context(model, n_ctx=2048, n_batch=64, n_threads=THREADS, swa_full=False) as ctx:
        gen = Generator(model, ctx)
        long_prompt = model.vocab.tokenize("alpha beta gamma delta " * 200)
        list(gen.generate(long_prompt, GenerationParams(max_tokens=1, **GREEDY)))
        assert ctx.seq_pos_min(0) > 0
        branch = long_prompt[:50] + model.vocab.tokenize(" omega", add_special=False)
        windowed, fresh = [], []
        g = gen.generate(branch, greedy_captured(8, windowed))
        tokens = [s.token for s in g]
        assert g.usage.cached_tokens == 0
    # Decoded again from the start, the branch has a fresh context's logits; a forgotten
    # prefix taken as cached would move them by whole units.
    fresh_run(model, branch, teacher_forced(tokens, fresh))
    assert_logits_close(windowed, fresh)


def test_custom_sampler_and_processor_are_plain_callables(gen, no_eog):
    seen, ranked, chosen = [], [], []

    def ban_the_best(logits, state):
        seen.append(state.step)
        ranked.append(np.argsort(logits)[::-1][:3].tolist())
        out = logits.copy()  # the row is a read-only view: a processor returns a new array
        out[ranked[-1][0]] = -np.inf
        return out

    def second_best(logits, state):
        chosen.append(int(np.argsort(logits)[-2]))
        return chosen[-1]

    params = GenerationParams(max_tokens=3, logit_bias=no_eog, sampler=second_best, processors=[ban_the_best])
    steps = list(gen.generate("Hello", params))
    assert seen == [0, 1, 2]
    assert [s.token for s in steps] == chosen  # the sampler's choice is the token generated
    assert chosen == [r[2] for r in ranked]  # it saw the processed row: its second best is the row's third


def test_a_stop_token_id_ends_generation_without_its_text(model, no_eog):
    prompt, settings = "The three primary colors are", dict(max_tokens=12, logit_bias=no_eog, **GREEDY)
    _, free = fresh_run(model, prompt, GenerationParams(**settings))
    stop_token = int(free.sequence.generated[3])  # a token the free run is known to write on this CPU
    first = free.sequence.generated.tolist().index(stop_token)
    text, g = fresh_run(model, prompt, GenerationParams(stop_token_ids=[stop_token], **settings))
    assert g.finish_reason == "stop" and g.usage.completion_tokens == first + 1
    assert text == model.vocab.detokenize(free.sequence.generated[:first].tolist())


def test_min_tokens_holds_back_the_end_of_generation(model, gen):
    # An end-of-generation token forced by the bias is banned for the first 5 tokens, then taken.
    forced = {model.vocab.eos: 100.0}
    g = gen.generate("Once upon a time", GenerationParams(max_tokens=20, logit_bias=forced, min_tokens=5, **GREEDY))
    steps = list(g)
    assert len(steps) == 6 and steps[-1].token == model.vocab.eos and g.finish_reason == "stop"


def test_ignore_eos_generates_to_max_tokens(model, gen):
    forced = {model.vocab.eos: 100.0}
    g = gen.generate("Once upon a time", GenerationParams(max_tokens=6, logit_bias=forced, ignore_eos=True, **GREEDY))
    steps = list(g)
    assert len(steps) == 6 and g.finish_reason == "length"
    assert not any(model.vocab.is_eog(step.token) for step in steps)
