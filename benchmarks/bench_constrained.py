"""Greedy decoding under a JSON-schema constraint against the same decoding unconstrained.

Same model, prompts and threads; rounds alternate the two (in ABBA order)
so drift hits both alike. Measures:
  - one sequence: tokens/s of each after the first token (the constrained
    run generates one schema-valid array of records, about 150-200 tokens;
    the unconstrained run generates as many tokens with end-of-generation
    banned)
  - the constraint's cost per token inside that loop: the scheduler
    computing the mask ahead, and the processor call (applying it to the
    row), median and p99
  - that cost split, on a replay of the same tokens: llguidance's mask
    computation (compute_masks) and the NumPy masking (the processor call
    with its mask ready)
  - --slots sequences at once (default 4, one prompt each, one decode per
    step, as the server batches them): aggregate tokens/s constrained
    (GenerationParams(constraint=...), the scheduler's own path) against
    unconstrained, and Python's time per step beside llama.cpp's
  - on a replay of those sequences' tokens, llguidance's masks for all of
    them per step: one matcher after another, and in one call on
    llguidance's parallel executor (its default pool: 80% of the CPUs)
  - where the scheduler computes masks, with 1 and --slots constrained
    sequences: its steps take turns, one by one within the same
    generations, between three ways (so load that comes and goes hits all
    alike): every processor computing its own mask when called (the path
    before the scheduler computed them ahead), all ahead on llguidance's
    pool, and all ahead one matcher after another on the engine thread
    (compute_masks' default where the pool would have one thread; a single
    mask is always computed so)
Target: constrained >= 0.9 x unconstrained.

Run:  .venv/bin/python benchmarks/bench_constrained.py [--rounds 3] [--threads 2] [--slots 4] [--model SPEC]
Writes benchmarks/results/bench_constrained-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import time

import jsonschema
import llguidance
import numpy as np
from harness import metadata, summary, write_result  # benchmarks/ is on sys.path when a benchmark runs as a script

from helios_core import GenerationParams, Generator, Model, engine, resolve_model
from helios_core.constraint import ConstraintProcessor, compute_masks, json_schema, tokenizer_for
from helios_core.context import Context
from helios_core.engine import Done, Request, Scheduler
from helios_core.engine.llama_runner import LlamaRunner
from helios_core.sampling import SamplingState
from helios_core.sequence import Step

RECORDS = 8
SCHEMA = {
    "type": "array",
    "minItems": RECORDS,
    "maxItems": RECORDS,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "enum": ["Paris", "Lima", "Oslo", "Tokyo", "Cairo"]},
            "member": {"type": "boolean"},
        },
        "required": ["name", "age", "city", "member"],
        "additionalProperties": False,
    },
}
PROMPT = 'People as JSON: [{"name": "Ana", "age": 31, "city": "Lima", "member": true}, '
# One prompt per slot in the batched runs, so the sequences (and their matchers' states) differ.
PROMPTS = [PROMPT] + [
    f'People as JSON: [{{"name": "{name}", "age": {age}, "city": "{city}", "member": {member}}}, '
    for name, age, city, member in (
        ("Bob", 45, "Oslo", "false"),
        ("Chen", 27, "Tokyo", "true"),
        ("Dara", 62, "Cairo", "false"),
        ("Eli", 8, "Paris", "true"),
        ("Fay", 90, "Lima", "false"),
        ("Gus", 19, "Oslo", "true"),
        ("Hana", 33, "Tokyo", "false"),
    )
]
MAX_TOKENS = 400


class TimedProcessor(ConstraintProcessor):
    """A constraint processor that appends the duration of each of its calls to `times` (seconds).

    Still a ConstraintProcessor, so the scheduler treats it as any other (its
    mask may be computed ahead, with the other slots').
    """

    def __init__(self, model: Model, times: list[float]):
        super().__init__(model, json_schema(SCHEMA))
        self.times = times

    def __call__(self, logits, state):
        start = time.perf_counter()
        out = super().__call__(logits, state)
        self.times.append(time.perf_counter() - start)
        return out


def mask_seconds(scheduler: Scheduler) -> float:
    """Seconds the scheduler has spent computing the masks of its constrained slots ahead."""
    return scheduler.stats.mask_seconds


def decode(generator: Generator, params: GenerationParams) -> tuple[float, float, list[int], str, float]:
    """tok/s after the first token, Python's share per step (us), the generated tokens, the text, and the
    scheduler's mask computation per step (us)."""
    ctx = generator.ctx
    generator.cache.forget(ctx)
    generation = generator.generate(PROMPT, params)
    first = next(generation)  # the prompt is decoded and the first token sampled
    ctx.perf_reset()
    masks = mask_seconds(generator.scheduler)
    start = time.perf_counter()
    steps = [first, *generation]
    wall = time.perf_counter() - start
    n = len(steps) - 1
    overhead_us = 1e6 * (wall - ctx.perf().eval_ms / 1000) / n
    masks_us = 1e6 * (mask_seconds(generator.scheduler) - masks) / n
    return n / wall, overhead_us, generation.sequence.generated.tolist(), "".join(s.text for s in steps), masks_us


def decode_together(
    scheduler: Scheduler, params: list[GenerationParams]
) -> tuple[float, float, list[list[int]], list[str], float]:
    """len(params) sequences in one scheduler, from PROMPTS: aggregate tok/s after every one has its first token,
    Python's share per step (us: wall time minus llama.cpp's), each sequence's generated tokens, each text,
    and the scheduler's mask computation per step (us)."""
    ctx = scheduler.runner.ctx
    for slot in scheduler.slots:
        slot.cache.forget(ctx)
    events: list[list] = [[] for _ in params]
    for prompt, request_params, out in zip(PROMPTS, params, events, strict=False):
        scheduler.submit(Request(ctx.model.vocab.tokenize(prompt), request_params, out.append))
    while not all(out for out in events):  # every prompt read and its first token sampled
        scheduler.step()
    ctx.perf_reset()
    stats = scheduler.stats
    steps, tokens, masks = stats.steps, stats.generated_tokens, mask_seconds(scheduler)
    start = time.perf_counter()
    while scheduler.has_work:
        scheduler.step()
    wall = time.perf_counter() - start
    steps, tokens = stats.steps - steps, stats.generated_tokens - tokens
    perf = ctx.perf()
    overhead_us = 1e6 * (wall - (perf.prompt_ms + perf.eval_ms) / 1000) / steps
    masks_us = 1e6 * (mask_seconds(scheduler) - masks) / steps
    for out in events:
        done = out[-1]
        if not isinstance(done, Done) or done.error is not None:
            raise RuntimeError(f"a batched sequence failed: {done}")
    generated = [[e.token for e in out if isinstance(e, Step)] for out in events]
    texts = ["".join(e.text for e in out if isinstance(e, Step)) for out in events]
    return tokens / wall, overhead_us, generated, texts, masks_us


def replay_masks_together(model: Model, sequences: list[list[int]]) -> tuple[list[float], list[float]]:
    """Along the sequences' tokens, step by step: seconds of computing every live sequence's mask one matcher
    after another (as each processor does when called alone), and in one call on llguidance's pool."""
    spec = json_schema(SCHEMA)
    histories = [np.array(tokens, dtype=np.int32) for tokens in sequences]
    apart = [spec.processor(model) for _ in sequences]
    together = [spec.processor(model) for _ in sequences]
    mask = np.zeros((model.vocab.n_vocab + 31) // 32, dtype=np.uint32)
    serial, batched = [], []
    for i in range(max(len(h) for h in histories)):
        live = [j for j, h in enumerate(histories) if i < len(h) and not model.vocab.is_eog(int(h[i]))]
        if not live:
            break
        for j in live:  # advancing is the same work either way: outside the timings
            apart[j].advance(histories[j][:i])
            together[j].advance(histories[j][:i])
        start = time.perf_counter()
        for j in live:
            apart[j].matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        mid = time.perf_counter()
        compute_masks([(together[j], histories[j][:i]) for j in live], POOL)
        batched.append(time.perf_counter() - mid)
        serial.append(mid - start)
    return serial, batched


class SerialExecutor:
    """An executor for compute_masks that computes one matcher after another on the calling thread (no pool)."""

    def unsafe_compute_mask_ptr(self, matchers, pointer: int, one_mask_bytes: int, n_masks: int) -> None:
        for matcher, index in matchers:
            matcher.unsafe_compute_mask_ptr(pointer + index * one_mask_bytes, one_mask_bytes)


# llguidance's parallel executor on its default thread count (80% of the CPUs), whatever compute_masks' default.
POOL = llguidance.LLExecutor()
# How the scheduler's compute_masks call is served in each way of computing masks.
MASK_WAYS = {
    "in_processor": lambda items, executor=None: None,  # none ready: each processor computes its own when called
    "ahead_pool": functools.partial(compute_masks, executor=POOL),
    "ahead_serial": functools.partial(compute_masks, executor=SerialExecutor()),
}


def mask_ways_alternating(scheduler: Scheduler, n_sequences: int, runs: int) -> dict[str, dict[str, list[float]]]:
    """Constrained greedy generations of n_sequences at once, each step served by the next of MASK_WAYS in turn.

    Per way, per step (seconds): the whole step, llama.cpp's decode in it, and the rest (Python's share).
    """
    ctx = scheduler.runner.ctx
    spec = json_schema(SCHEMA)
    decode = ctx.decode
    decode_seconds = [0.0]

    def timed_decode(batch):
        start = time.perf_counter()
        decode(batch)
        decode_seconds[0] = time.perf_counter() - start

    times = {way: {"step": [], "decode": [], "python": []} for way in MASK_WAYS}
    ctx.decode = timed_decode  # this context only, for this measurement
    try:
        for run in range(runs):
            for slot in scheduler.slots:
                slot.cache.forget(ctx)
            for prompt in PROMPTS[:n_sequences]:
                params = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, constraint=spec)
                scheduler.submit(Request(ctx.model.vocab.tokenize(prompt), params, lambda event: None))
            scheduler.step()  # the prompts, and the first tokens
            ways = itertools.islice(itertools.cycle(MASK_WAYS), run, None)  # each run starts with the next way
            while scheduler.has_work:
                way = next(ways)
                engine.compute_masks = MASK_WAYS[way]
                start = time.perf_counter()
                scheduler.step()
                step = time.perf_counter() - start
                times[way]["step"].append(step)
                times[way]["decode"].append(decode_seconds[0])
                times[way]["python"].append(step - decode_seconds[0])
    finally:
        engine.compute_masks = compute_masks
        del ctx.decode
    return times


def replay_split(model: Model, tokens: list[int]) -> tuple[list[float], list[float]]:
    """Along `tokens`: seconds of each llguidance mask computation, and of each NumPy masking."""
    spec = json_schema(SCHEMA)
    processor = spec.processor(model)
    logits = np.random.default_rng(0).standard_normal(model.vocab.n_vocab).astype(np.float32)
    history = np.array(tokens, dtype=np.int32)
    compute, apply = [], []
    for i in range(len(tokens)):
        if model.vocab.is_eog(tokens[i]):
            break
        start = time.perf_counter()
        compute_masks([(processor, history[:i])])
        mid = time.perf_counter()
        processor(logits, SamplingState(history[:i], np.random.default_rng(0), step=i, n_prompt=0))
        apply.append(time.perf_counter() - mid)
        compute.append(mid - start)
    return compute, apply


def way_summary(times: dict[str, list[float]]) -> dict:
    """Step and decode times (ms) and Python's share (us) of one way of computing masks: median and mean."""

    def stats(values, scale):
        return {"median": scale * statistics.median(values), "mean": scale * statistics.fmean(values)}

    return {
        "steps": len(times["step"]),
        "step_ms": stats(times["step"], 1e3),
        "decode_ms": stats(times["decode"], 1e3),
        "python_us": stats(times["python"], 1e6),
    }


def us(values: list[float]) -> dict[str, float]:
    return {
        "median": 1e6 * statistics.median(values),
        "p99": 1e6 * float(np.percentile(values, 99)),
        "max": 1e6 * max(values),
        "count": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=4, help=f"sequences decoded together (at most {len(PROMPTS)})")
    args = parser.parse_args()
    if not 1 <= args.slots <= len(PROMPTS):
        parser.error(f"--slots must be in [1, {len(PROMPTS)}]")

    load_before = os.getloadavg()
    spec = json_schema(SCHEMA)
    runs: dict[str, list[float]] = {
        f"{side}{kind}": []
        for side in ("constrained", "unconstrained")
        for kind in ("", "_us", "_masks_us", "_batched", "_batched_us", "_batched_masks_us")
    }
    call_times: list[float] = []
    with Model(resolve_model(args.model)) as model:
        started = time.perf_counter()
        tokenizer_for(model)
        tokenizer_s = time.perf_counter() - started
        no_eog = {t: -100.0 for t in range(model.vocab.n_vocab) if model.vocab.is_eog(t)}
        ctx = Context(model, n_ctx=1024, n_batch=512, n_threads=args.threads)
        generator = Generator(model, ctx)
        ctx_batched = Context(model, n_ctx=1024 * args.slots, n_batch=512, n_seq_max=args.slots, n_threads=args.threads)
        scheduler = Scheduler(LlamaRunner(ctx_batched))

        def constrained() -> GenerationParams:
            return GenerationParams(
                max_tokens=MAX_TOKENS, temperature=0.0, processors=[TimedProcessor(model, call_times)]
            )

        constrained_batched = [
            GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, constraint=spec) for _ in range(args.slots)
        ]

        # Warm-ups, and the lengths the unconstrained runs match.
        _, _, tokens, text, _ = decode(generator, constrained())
        jsonschema.validate(json.loads(text), SCHEMA)
        n_tokens = len(tokens)
        _, _, batched_tokens, batched_texts, _ = decode_together(scheduler, constrained_batched)
        for batched_text in batched_texts:
            jsonschema.validate(json.loads(batched_text), SCHEMA)
        call_times.clear()
        unconstrained = GenerationParams(max_tokens=n_tokens, temperature=0.0, logit_bias=no_eog)
        unconstrained_batched = [
            GenerationParams(max_tokens=len(t), temperature=0.0, logit_bias=no_eog) for t in batched_tokens
        ]

        def record(side: str, single: tuple, batched: tuple) -> None:
            for suffix, values in (("", single), ("_batched", batched)):
                runs[f"{side}{suffix}"].append(values[0])
                runs[f"{side}{suffix}_us"].append(values[1])
                runs[f"{side}{suffix}_masks_us"].append(values[4])

        for round_ in range(args.rounds):
            # ABBA order: a speed that drifts within a round favours neither side.
            order = ("unconstrained", "constrained") if round_ % 2 == 0 else ("constrained", "unconstrained")
            for side in order:
                if side == "constrained":
                    bound = decode(generator, constrained()), decode_together(scheduler, constrained_batched)
                    jsonschema.validate(json.loads(bound[0][3]), SCHEMA)
                    for batched_text in bound[1][3]:
                        jsonschema.validate(json.loads(batched_text), SCHEMA)
                    record(side, *bound)
                else:
                    free = decode(generator, unconstrained), decode_together(scheduler, unconstrained_batched)
                    record(side, *free)
            print(
                f"round {round_ + 1}/{args.rounds}: unconstrained {free[0][0]:.1f} tok/s, "
                f"constrained {bound[0][0]:.1f} tok/s ({len(bound[0][2])} tokens); {args.slots} sequences: "
                f"unconstrained {free[1][0]:.1f} tok/s, constrained {bound[1][0]:.1f} tok/s"
            )
        ways = {n: mask_ways_alternating(s, n, runs=3) for n, s in ((1, generator.scheduler), (args.slots, scheduler))}
        compute, apply = replay_split(model, tokens)
        serial, together = replay_masks_together(model, batched_tokens)
        ctx_batched.close()
        ctx.close()
        description = model.description

    mean = {k: statistics.fmean(v) for k, v in runs.items()}
    # Each round's pair ran back to back: their ratio is the least disturbed by load that comes and goes.
    ratios, round_ratios = {}, {}
    for suffix in ("", "_batched"):
        ratios[suffix] = mean[f"constrained{suffix}"] / mean[f"unconstrained{suffix}"]
        round_ratios[suffix] = [
            c / u for c, u in zip(runs[f"constrained{suffix}"], runs[f"unconstrained{suffix}"], strict=True)
        ]
    result = {
        **metadata("bench_constrained", model=description, threads=args.threads),
        "schema": SCHEMA,
        "prompt": PROMPT,
        "constrained_text": text,
        "tokens": n_tokens,
        "tokenizer_build_s": tokenizer_s,
        "tokens_per_s": {k: summary(runs[k]) for k in ("constrained", "unconstrained")},
        "python_overhead_us_per_token": {k: summary(runs[f"{k}_us"]) for k in ("constrained", "unconstrained")},
        "constraint_us_per_token": {
            "processor_call": us(call_times),
            "masks_ahead": summary(runs["constrained_masks_us"]),
            "llguidance_mask": us(compute),
            "numpy_masking": us(apply),
        },
        "ratio": ratios[""],
        "ratio_per_round": {"median": statistics.median(round_ratios[""]), "runs": round_ratios[""]},
        "batched": {
            "sequences": args.slots,
            "prompts": PROMPTS[: args.slots],
            "tokens": [len(t) for t in batched_tokens],
            "tokens_per_s": {k: summary(runs[f"{k}_batched"]) for k in ("constrained", "unconstrained")},
            "python_overhead_us_per_step": {
                k: summary(runs[f"{k}_batched_us"]) for k in ("constrained", "unconstrained")
            },
            "masks_ahead_us_per_step": summary(runs["constrained_batched_masks_us"]),
            "llguidance_masks_us_per_step": {"one_after_another": us(serial), "pool": us(together)},
            "ratio": ratios["_batched"],
            "ratio_per_round": {
                "median": statistics.median(round_ratios["_batched"]),
                "runs": round_ratios["_batched"],
            },
        },
        "mask_ways": {str(n): {way: way_summary(t) for way, t in by_way.items()} for n, by_way in ways.items()},
        "target": 0.9,
    }
    # Other work on the machine moves both speeds; the ratio of each round's pair moves least.
    result["machine"]["load_average_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    write_result(result)

    print(
        f"\n{description}, {args.threads} threads, {args.rounds} rounds, {n_tokens} tokens, "
        f"tokenizer built in {tokenizer_s:.2f} s, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    for suffix, label in (("", "one sequence"), ("_batched", f"{args.slots} sequences")):
        print(
            f"{label}, greedy tok/s: unconstrained {mean[f'unconstrained{suffix}']:.1f}, constrained "
            f"{mean[f'constrained{suffix}']:.1f}, ratio {ratios[suffix]:.3f} (median of rounds "
            f"{statistics.median(round_ratios[suffix]):.3f}; target 0.90)"
        )
        print(
            f"  python per step: unconstrained {mean[f'unconstrained{suffix}_us']:.0f} us, constrained "
            f"{mean[f'constrained{suffix}_us']:.0f} us (of which masks computed ahead "
            f"{mean[f'constrained{suffix}_masks_us']:.0f} us)"
        )
    for label, key in (
        ("processor call", "processor_call"),
        ("  llguidance mask", "llguidance_mask"),
        ("  numpy masking", "numpy_masking"),
    ):
        t = result["constraint_us_per_token"][key]
        print(f"{label:20} median {t['median']:7.1f} us   p99 {t['p99']:7.1f} us   max {t['max']:7.1f} us")
    for label, key in (("one after another", "one_after_another"), ("on llguidance's pool", "pool")):
        t = result["batched"]["llguidance_masks_us_per_step"][key]
        print(
            f"{args.slots} masks, {label:18} median {t['median']:7.1f} us   p99 {t['p99']:7.1f} us   "
            f"max {t['max']:7.1f} us"
        )
    for n, by_way in result["mask_ways"].items():
        base = by_way["in_processor"]["step_ms"]["mean"]
        for way, t in by_way.items():
            print(
                f"{n} constrained, masks {way:13} step median {t['step_ms']['median']:6.2f} ms, mean "
                f"{t['step_ms']['mean']:6.2f} ms ({t['step_ms']['mean'] / base:.3f}x); python median "
                f"{t['python_us']['median']:6.0f} us, mean {t['python_us']['mean']:6.0f} us; {t['steps']} steps"
            )


if __name__ == "__main__":
    main()
