"""One request's state: what it asked for, and everything that turns its logits into text.

A `SequenceState` holds everything that belongs to one request: its tokens,
sampler, processors, random generator, detokenizer, stop matcher and limits.
`step(logits)` turns one logits row into one `Step`. The scheduler
(engine.py) calls it for every sequence it batches; nothing here knows
about contexts or batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from helios_core import sampling
from helios_core.constraint import Constraint
from helios_core.lora import Adapter, adapter_set
from helios_core.model import Model
from helios_core.reasoning import Phase, ReasoningPlan, ReasoningTracker
from helios_core.sampling import (
    BatchSampler,
    LogitsProcessor,
    Sampler,
    SamplerFactory,
    SamplingState,
    TokenLogprob,
)
from helios_core.sampling.params import SamplingSettings
from helios_core.scoring import Scored
from helios_core.text import IncrementalDetokenizer, StopMatcher

LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs", "raw_logits", "processed_logits")


@dataclass(kw_only=True)
class GenerationParams(SamplingSettings):
    """What one request asks for. Defaults match OpenAI's API where it has one.

    The built-in chain's settings (temperature ... min_tokens, seed) and their bounds are
    inherited from the one table, sampling.params.SamplingSettings; the rest:

    max_tokens: most tokens to generate (None: until the context is full; 0: read the
        prompt only, e.g. to score it).
    stop: stop strings; the text ends before the first one.
    ignore_eos: ban end-of-generation tokens: generate until max_tokens or a stop.
    stop_token_ids: further tokens that end the generation ("stop"); like an end-of-
        generation token, their own text is not part of the output.
    dry_sequence_breakers: texts that end a repeat DRY counts (sampling.make_dry_penalty).
    logit_bias: token id -> a number added to its logit.
    sampler: a custom Sampler; when given, the built-in chain's settings are ignored.
    sampler_factory: a callable making a custom Sampler, called once per request: for
        samplers that keep state from token to token.
    batch_sampler: a custom BatchSampler instead: each step calls it once with the rows
        of every sequence that uses it (see sampling.BatchSampler).
    processors: custom LogitsProcessors, run after the built-in penalties and bias.
    constraint: a Constraint (helios_core.constraint: json_schema, regex, grammar) the
        output must match; each request gets its own processor for it, run last.
    logprobs / top_logprobs: report the chosen token's logprob and the top N alternatives.
    logprobs_mode: what those numbers are of (vLLM's names). "raw_logprobs" (the default,
        as vLLM and llama-server report): the model's own distribution, before penalties,
        logit_bias, processors and constraints. "processed_logprobs": the distribution
        those leave for the sampler (temperature and truncation not applied), where a
        banned token has no probability and is never listed. "raw_logits" and
        "processed_logits": the same rows, unnormalised.
    prompt_logprobs: None, or score the prompt: the logprob of every prompt token after
        the first and its N best alternatives arrive as one `Scored` event before the
        first Step. The prompt is then decoded whole (no cached prefix has its logits).
    lora: (Adapter, scale) pairs (helios_core.lora) this request decodes under; () is the
        base model. Kept in canonical form (lora.adapter_set); requests with equal sets batch together.
    speculative: False opts this request out of speculative decoding where the engine
        runs it (helios_core.speculative); requests with a constraint, a batch sampler
        or a sampler without a `distribution` are never speculated.
    reasoning: how the output writes its reasoning section (helios_core.reasoning), or None:
        all of it is answer. With a plan, each Step's text is answer and its `reasoning` the
        section's text; stop strings and the constraint apply to the answer only.
    reasoning_budget: most tokens generated inside the reasoning section before the engine
        ends it by writing the format's closing text (None or -1: no limit; 0: no reasoning).
    """

    max_tokens: int | None = 256
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    dry_sequence_breakers: Sequence[str] = sampling.DRY_SEQUENCE_BREAKERS
    logit_bias: Mapping[int, float] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    logprobs_mode: str = "raw_logprobs"
    prompt_logprobs: int | None = None
    sampler: Sampler | None = None
    sampler_factory: SamplerFactory | None = None
    batch_sampler: BatchSampler | None = None
    processors: Sequence[LogitsProcessor] = ()
    constraint: Constraint | None = None
    lora: Sequence[tuple[Adapter, float]] = ()
    speculative: bool = True
    reasoning: ReasoningPlan | None = None
    reasoning_budget: int | None = None

    def __post_init__(self):
        super().__post_init__()  # the table's bounds
        self.lora = adapter_set(self.lora)
        if self.max_tokens is not None and self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in [0, 20], got {self.top_logprobs}")
        custom = [name for name in ("sampler", "sampler_factory", "batch_sampler") if getattr(self, name) is not None]
        if len(custom) > 1:
            raise ValueError(f"give one of sampler, sampler_factory and batch_sampler, not both {' and '.join(custom)}")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {', '.join(LOGPROBS_MODES)}; got {self.logprobs_mode!r}")
        if self.reasoning_budget is not None and self.reasoning_budget < -1:
            raise ValueError(f"reasoning_budget must be -1 (no limit) or >= 0, got {self.reasoning_budget}")
        if self.prompt_logprobs is not None and not 0 <= self.prompt_logprobs <= 20:
            raise ValueError(f"prompt_logprobs must be None or in [0, 20], got {self.prompt_logprobs}")
        # Fail on bad settings now, not after a model has loaded or a slot was taken.
        if not custom:
            self.build_sampler()
        self.build_processors()

    def build_sampler(self) -> Sampler:
        """This request's sampler: a new one per call, since some keep per-request state."""
        if self.sampler is not None:
            return self.sampler
        if self.sampler_factory is not None:
            return self.sampler_factory()
        return sampling.make_sampler(
            self.temperature,
            self.top_k,
            self.top_p,
            self.min_p,
            typical_p=self.typical_p,
            top_n_sigma=self.top_n_sigma,
            xtc_threshold=self.xtc_threshold,
            xtc_probability=self.xtc_probability,
            mirostat=self.mirostat,
            mirostat_tau=self.mirostat_tau,
            mirostat_eta=self.mirostat_eta,
        )

    def build_processors(self, vocab=None) -> list[LogitsProcessor]:
        """Built-in penalties and bias in llama.cpp's order, then the request's own processors.

        vocab: turns the DRY sequence breakers into tokens (without it, as when only
        checking the settings, DRY runs without breakers).
        """
        built_in = sampling.make_logits_processors(
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
        )
        if self.dry_multiplier:
            breakers = sampling.dry_sequence_breakers(vocab, self.dry_sequence_breakers) if vocab else ()
            # After the other penalties, before the bias: a bias of -100 then still bans outright.
            built_in.insert(
                len(built_in) - bool(self.logit_bias),
                sampling.make_dry_penalty(
                    self.dry_multiplier, self.dry_base, self.dry_allowed_length, self.dry_penalty_last_n, breakers
                ),
            )
        if vocab is not None and self.ignore_eos:
            built_in.append(sampling.make_token_ban(vocab.eog_tokens))
        if vocab is not None and self.min_tokens:
            ends = vocab.eog_tokens + tuple(self.stop_token_ids)
            built_in.append(sampling.make_token_ban(ends, until_step=self.min_tokens))
        return built_in + list(self.processors)


@dataclass
class Step:
    """One generated token and the text it released.

    text may be empty (a split character, or text held back as a possible
    stop string). finish_reason is set on the last step: "stop" (stop string
    or end-of-generation token) or "length" (max_tokens or a full context).
    With a reasoning plan, text is the answer's and reasoning the reasoning
    section's text the token released (markers in neither); thinking says the
    token itself belongs to the section (it counts in Usage.reasoning_tokens).
    """

    token: int
    text: str
    reasoning: str = ""
    thinking: bool = False
    logprob: float | None = None
    top_logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found in the KV cache, not decoded again
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of the completion tokens, those of the reasoning section (and its markers)


@dataclass
class Timings:
    prompt_ms: float = 0.0
    generation_ms: float = 0.0
    draft_tokens: int = 0  # speculative decoding: tokens drafted for this request, and how many were kept
    draft_accepted: int = 0

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
        self.last_token = int(prompt[-1])  # tokens[-1] as a Python int: the token the next decode step feeds
        self.sampler = params.build_sampler()
        self.processors = params.build_processors(model.vocab)
        self.reasoning = (
            None
            if params.reasoning is None
            else ReasoningTracker(params.reasoning, model.vocab, params.reasoning_budget)
        )
        self._model = model
        self._constraint = None
        if params.constraint is not None:
            # Last, so that nothing after it can lift a token it forbids.
            self._constraint = params.constraint.processor(model)
            self.processors.append(self._constraint)
            self._place_constraint()
        # Any integer seeds a generator (OpenAI allows negative seeds); NumPy wants a non-negative one.
        self.rng = np.random.default_rng(None if params.seed is None else params.seed % 2**64)
        self.state = SamplingState(self._tokens[: self.n_tokens], self.rng, 0, self.n_prompt)
        self.detokenizer = IncrementalDetokenizer(model.vocab)
        self.stops = StopMatcher(params.stop)
        # The tokens that end the output, as one set: a lookup per token, not a call into llama.cpp.
        self._ends = frozenset(model.vocab.eog_tokens).union(params.stop_token_ids)
        self.finish_reason: str | None = None
        self.usage = Usage(prompt_tokens=self.n_prompt)
        self.prompt_scores = None if params.prompt_logprobs is None else Scored.empty(prompt, params.prompt_logprobs)
        # Which row the reported logprobs come from, and whether they are normalised.
        self._report_processed = params.logprobs_mode.startswith("processed")
        self._normalise_reported = params.logprobs_mode.endswith("logprobs")
        self._processed: np.ndarray | None = None  # the last row process() returned, for processed_* reports

    @property
    def scores_prompt(self) -> bool:
        return self.prompt_scores is not None

    @property
    def tokens(self) -> np.ndarray:
        """Prompt and generated tokens so far (a view)."""
        return self._tokens[: self.n_tokens]

    @property
    def generated(self) -> np.ndarray:
        return self._tokens[self.n_prompt : self.n_tokens]

    def step(self, logits: np.ndarray) -> Step:
        """Choose the next token from its logits row (or take the one the engine writes) and advance the text."""
        processed = self.process(logits)
        forced = self.forced_token()
        return self.accept(int(self.sampler(processed, self.state)) if forced is None else forced, logits)

    def forced_token(self) -> int | None:
        """The token the engine writes next instead of sampling (a reasoning budget's closing text), if any."""
        forced = self.reasoning.forced if self.reasoning is not None else None
        return forced.popleft() if forced else None

    def process(self, logits: np.ndarray) -> np.ndarray:
        """The row after this request's processors (the row itself when it has none)."""
        state = self.state
        state.tokens = self._tokens[: self.n_tokens]
        state.step = self.n_tokens - self.n_prompt
        processed = sampling.apply_processors(logits, self.processors, state) if self.processors else logits
        if self._constraint is not None and self.reasoning is not None and self.reasoning.phase is Phase.START:
            # The output may still open its reasoning section, which the constraint does not cover.
            opening = self.reasoning.open_token
            if opening is not None and processed is not logits:
                processed[opening] = logits[opening]
        if self._report_processed:
            self._processed = processed
        return processed

    def accept(self, token: int, logits: np.ndarray) -> Step:
        """Take `token` as the next one (chosen from `logits`, the unprocessed row) and advance the text."""
        step = Step(token, "")
        if self.params.logprobs:
            row = self._processed if self._report_processed and self._processed is not None else logits
            step.logprob, step.top_logprobs = sampling.logprobs(
                row, token, self.params.top_logprobs, normalise=self._normalise_reported
            )

        self._tokens[self.n_tokens] = token
        self.n_tokens += 1
        self.last_token = token
        self.usage.completion_tokens += 1
        if token in self._ends:
            step.text = self._flush(step, token)
            step.finish_reason = self.finish_reason = "stop"
            return step
        text, stopped = self.stops.feed(self._answer(step, token, self.detokenizer.feed(token)))
        if stopped:
            step.text = text
            step.finish_reason = self.finish_reason = "stop"
        elif self.usage.completion_tokens >= self.max_new:
            step.text = text + self._flush(step)
            step.finish_reason = self.finish_reason = "length"
        else:
            step.text = text
        return step

    def _answer(self, step: Step, token: int | None, text: str, end: bool = False) -> str:
        """The answer's part of `text` (released by `token`; None: by the end); the reasoning's goes to step.reasoning.

        end: the output ends here, so the reasoning parser releases what it held back.
        """
        tracker = self.reasoning
        if tracker is None:
            return text
        if token is not None:
            split = tracker.feed(token, text)
            step.thinking = tracker.tokens == self.n_tokens - self.n_prompt
        else:
            split = tracker.splitter.feed(text)
        if end:
            split = split + tracker.finish()
        step.reasoning += split.reasoning
        self.usage.reasoning_tokens = tracker.tokens
        self._place_constraint(text)
        return split.content

    def _flush(self, step: Step, token: int | None = None) -> str:
        """The held-back text at the end; token: the end-of-generation token that ended the output, if one did."""
        text, stopped = self.stops.feed(self._answer(step, token, self.detokenizer.flush(), end=True))
        return text if stopped else text + self.stops.flush()

    def _place_constraint(self, text: str = "") -> None:
        """Constrain the answer only: off inside the reasoning section, on from the answer's first token.

        Before anything is decided (Phase.START) it is on, with the section's opening token let through
        (off where a header comes first: harmony's).
        Whitespace between the section's end and the answer (Qwen writes "</think>\n\n") is no part of
        the answer: the constraint never sees it. text: what the token just taken wrote.
        """
        tracker = self.reasoning
        if self._constraint is None or tracker is None:
            return
        wanted = tracker.phase is Phase.ANSWER or (tracker.phase is Phase.START and not tracker.header_first)
        placed = bool(self.processors) and self.processors[-1] is self._constraint
        if placed and tracker.tokens and self._constraint.skip == self.n_tokens - self.n_prompt - 1 and text.isspace():
            self._constraint.skip += 1
        elif wanted and not placed:
            if tracker.answer_from:  # after a section: a matcher that has seen nothing of it
                self._constraint = self.params.constraint.processor(self._model)
                self._constraint.skip = tracker.answer_from
            self.processors.append(self._constraint)
        elif placed and not wanted:
            self.processors.pop()
