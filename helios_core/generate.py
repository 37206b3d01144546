"""The token loop: one request's state, and generation over a context.

A `SequenceState` holds everything that belongs to one request: its tokens,
sampler, processors, random generator, detokenizer, stop matcher and limits.
It turns one logits row into one `Step`. `Generator` drives a single
sequence on a context; the batched engine drives many SequenceStates with
the same `step()`, one decode for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from helios_core import sampling
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.kvcache import CachedSequence
from helios_core.model import Model
from helios_core.sampling import LogitsProcessor, Sampler, SamplingState, TokenLogprob
from helios_core.text import IncrementalDetokenizer, StopMatcher


@dataclass
class GenerationParams:
    """What one request asks for. Defaults match OpenAI's API where it has one.

    max_tokens: most tokens to generate (None: until the context is full).
    sampler: a custom Sampler; when given, temperature/top_k/top_p/min_p are ignored.
    processors: custom LogitsProcessors, run after the built-in penalties and bias.
    logprobs / top_logprobs: report the chosen token's logprob and the top N alternatives.
    """

    max_tokens: int | None = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = ()
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    sampler: Sampler | None = None
    processors: Sequence[LogitsProcessor] = ()

    def __post_init__(self):
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in [0, 20], got {self.top_logprobs}")
        # Fail on bad settings now, not after a model has loaded or a slot was taken.
        self.build_sampler()
        self.build_processors()

    def build_sampler(self) -> Sampler:
        return self.sampler or sampling.make_sampler(self.temperature, self.top_k, self.top_p, self.min_p)

    def build_processors(self) -> list[LogitsProcessor]:
        built_in = sampling.make_logits_processors(
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
        )
        return built_in + list(self.processors)


@dataclass
class Step:
    """One generated token and the text it released.

    text may be empty (a split character, or text held back as a possible
    stop string). finish_reason is set on the last step: "stop" (stop string
    or end-of-generation token) or "length" (max_tokens or a full context).
    """

    token: int
    text: str
    logprob: float | None = None
    top_logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found in the KV cache, not decoded again
    completion_tokens: int = 0


@dataclass
class Timings:
    prompt_ms: float = 0.0
    generation_ms: float = 0.0

    def tokens_per_second(self, tokens: int) -> float:
        return 1000.0 * tokens / self.generation_ms if self.generation_ms > 0 else 0.0


class SequenceState:
    """All per-request state; `step(logits)` chooses and accounts for one token."""

    def __init__(self, model: Model, prompt: Sequence[int], params: GenerationParams, n_ctx: int):
        if not prompt:
            raise ValueError("the prompt is empty: it needs at least one token")
        self.vocab = model.vocab
        self.params = params
        self.n_prompt = len(prompt)
        self.max_new = n_ctx - self.n_prompt
        if params.max_tokens is not None:
            self.max_new = min(self.max_new, params.max_tokens)
        # One buffer for the whole history: the state's view grows without copies.
        self._tokens = np.zeros(self.n_prompt + max(self.max_new, 0) + 1, dtype=np.int32)
        self._tokens[: self.n_prompt] = prompt
        self.n_tokens = self.n_prompt
        self.sampler = params.build_sampler()
        self.processors = params.build_processors()
        self.rng = np.random.default_rng(params.seed)
        self.state = SamplingState(self._tokens[: self.n_tokens], self.rng, 0, self.n_prompt)
        self.detokenizer = IncrementalDetokenizer(model.vocab)
        self.stops = StopMatcher(params.stop)
        self.finish_reason: str | None = None
        self.usage = Usage(prompt_tokens=self.n_prompt)

    @property
    def tokens(self) -> np.ndarray:
        """Prompt and generated tokens so far (a view)."""
        return self._tokens[: self.n_tokens]

    @property
    def generated(self) -> np.ndarray:
        return self._tokens[self.n_prompt : self.n_tokens]

    def step(self, logits: np.ndarray) -> Step:
        """Choose the next token from its logits row and advance the text."""
        state = self.state
        state.tokens = self._tokens[: self.n_tokens]
        state.step = self.n_tokens - self.n_prompt
        processed = sampling.apply_processors(logits, self.processors, state) if self.processors else logits
        token = int(self.sampler(processed, state))
        step = Step(token, "")
        if self.params.logprobs:
            step.logprob, step.top_logprobs = sampling.logprobs(logits, token, self.params.top_logprobs)

        self._tokens[self.n_tokens] = token
        self.n_tokens += 1
        self.usage.completion_tokens += 1
        if self.vocab.is_eog(token):
            step.text = self._flush()
            step.finish_reason = self.finish_reason = "stop"
            return step
        text, stopped = self.stops.feed(self.detokenizer.feed(token))
        if stopped:
            step.text = text
            step.finish_reason = self.finish_reason = "stop"
        elif self.usage.completion_tokens >= self.max_new:
            step.text = text + self._flush()
            step.finish_reason = self.finish_reason = "length"
        else:
            step.text = text
        return step

    def _flush(self) -> str:
        text, stopped = self.stops.feed(self.detokenizer.flush())
        return text if stopped else text + self.stops.flush()


class Generation:
    """An iterator of Steps for one request; usage, timings and finish_reason once done."""

    def __init__(self, steps: Iterator[Step], seq: SequenceState, timings: Timings):
        self._steps = steps
        self.sequence = seq
        self.timings = timings

    def __iter__(self) -> Iterator[Step]:
        return self._steps

    def __next__(self) -> Step:
        return next(self._steps)

    @property
    def usage(self) -> Usage:
        return self.sequence.usage

    @property
    def finish_reason(self) -> str | None:
        return self.sequence.finish_reason

    def text(self) -> str:
        """Run to the end and return the whole completion."""
        return "".join(step.text for step in self)


class Generator:
    """Generates on one sequence of a context, reusing the KV cache across calls.

    A new prompt that shares a prefix with the previous prompt-plus-completion
    decodes only the rest: a follow-up chat turn costs the new turn.
    """

    def __init__(self, model: Model, ctx: Context | None = None, *, n_ctx: int = 4096,
                 n_threads: int | None = None, n_batch: int = 512):
        self.model = model
        self.ctx = ctx or Context(model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads)
        self.cache = CachedSequence(0)
        self._batch = Batch(self.ctx.n_batch)

    def generate(self, prompt: str | Sequence[int], params: GenerationParams | None = None) -> Generation:
        """Start generating. Strings are tokenized with BOS and without special-token parsing."""
        params = params or GenerationParams()
        tokens = self.model.vocab.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(tokens) >= self.ctx.n_ctx_seq:
            raise ValueError(f"prompt of {len(tokens)} tokens does not fit the context of {self.ctx.n_ctx_seq}")
        seq = SequenceState(self.model, tokens, params, self.ctx.n_ctx_seq)
        timings = Timings()
        return Generation(self._run(seq, timings), seq, timings)

    def _run(self, seq: SequenceState, timings: Timings) -> Iterator[Step]:
        ctx, batch, cache = self.ctx, self._batch, self.cache
        prompt = seq.tokens.tolist()
        started = time.perf_counter()
        seq.usage.cached_tokens = cache.reuse(ctx, prompt)
        row = self._decode_prompt(prompt, seq.usage.cached_tokens)
        generating = time.perf_counter()
        timings.prompt_ms = 1000.0 * (generating - started)
        try:
            while True:
                step = seq.step(ctx.logits(row))
                timings.generation_ms = 1000.0 * (time.perf_counter() - generating)
                yield step
                if step.finish_reason:
                    return
                batch.set_one(step.token, seq.n_tokens - 1, cache.seq_id)
                ctx.decode(batch)
                cache.tokens.append(step.token)
                row = 0
        finally:
            timings.generation_ms = 1000.0 * (time.perf_counter() - generating)

    def _decode_prompt(self, prompt: list[int], start: int) -> int:
        """Decode prompt[start:] in n_batch chunks, logits for the last token only; return its row."""
        batch, chunk = self._batch, self.ctx.n_batch
        for begin in range(start, len(prompt), chunk):
            part = prompt[begin : begin + chunk]
            batch.set(part, begin, self.cache.seq_id, logits_last=begin + chunk >= len(prompt))
            self.ctx.decode(batch)
            self.cache.tokens.extend(part)
        return batch.n_tokens - 1
