"""Greedy decoding under a JSON-schema constraint against the same decoding unconstrained.

Same model, context, prompt and threads; rounds alternate the two (in ABBA
order) so drift hits both alike. Measures:
  - tokens/s of each after the first token (the constrained run generates
    one schema-valid array of records, about 150 tokens; the unconstrained
    run generates as many tokens with end-of-generation banned)
  - the constraint's cost per token inside the loop: the processor call
    (advance the matcher, compute its mask, apply it), median and p99
  - that cost split, on a replay of the same tokens: llguidance's mask
    computation (compute_masks) and the NumPy masking (the processor call
    with its mask ready)
Target: constrained >= 0.9 x unconstrained.

Run:  .venv/bin/python benchmarks/bench_constrained.py [--rounds 3] [--threads 2] [--model SPEC]
Writes benchmarks/results/bench_constrained-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
from bench_generate import summary  # benchmarks/ is on sys.path when a benchmark runs as a script

from helios_core import GenerationParams, Generator, Model, backend, resolve_model
from helios_core.constraint import compute_masks, json_schema, tokenizer_for
from helios_core.context import Context
from helios_core.sampling import SamplingState

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 8
SCHEMA = {
    "type": "array", "minItems": RECORDS, "maxItems": RECORDS,
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
MAX_TOKENS = 400


def timed(processor, times: list[float]):
    """The processor, with the duration of each call appended to `times` (seconds)."""

    def process(logits, state):
        start = time.perf_counter()
        out = processor(logits, state)
        times.append(time.perf_counter() - start)
        return out

    return process


def decode(generator: Generator, params: GenerationParams) -> tuple[float, int, list[int], str]:
    """tok/s after the first token, Python's share per step (us), the generated tokens, the text."""
    ctx = generator.ctx
    generator.cache.forget(ctx)
    generation = generator.generate(PROMPT, params)
    first = next(generation)  # the prompt is decoded and the first token sampled
    ctx.perf_reset()
    start = time.perf_counter()
    steps = [first, *generation]
    wall = time.perf_counter() - start
    n = len(steps) - 1
    overhead_us = 1e6 * (wall - ctx.perf().eval_ms / 1000) / n
    return n / wall, overhead_us, generation.sequence.generated.tolist(), "".join(s.text for s in steps)


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


def us(values: list[float]) -> dict[str, float]:
    return {"median": 1e6 * statistics.median(values), "p99": 1e6 * float(np.percentile(values, 99)),
            "max": 1e6 * max(values), "count": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    load_before = os.getloadavg()
    spec = json_schema(SCHEMA)
    runs: dict[str, list[float]] = {k: [] for k in ("constrained", "unconstrained", "constrained_us",
                                                      "unconstrained_us")}
    call_times: list[float] = []
    with Model(resolve_model(args.model)) as model:
        started = time.perf_counter()
        tokenizer_for(model)
        tokenizer_s = time.perf_counter() - started
        no_eog = {t: -100.0 for t in range(model.vocab.n_vocab) if model.vocab.is_eog(t)}
        ctx = Context(model, n_ctx=1024, n_batch=512, n_threads=args.threads)
        generator = Generator(model, ctx)

        def constrained() -> GenerationParams:
            processor = spec.processor(model)
            return GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, processors=[timed(processor, call_times)])

        _, _, tokens, text = decode(generator, constrained())  # warm-up, and the length to match
        jsonschema.validate(json.loads(text), SCHEMA)
        n_tokens = len(tokens)
        call_times.clear()
        unconstrained = GenerationParams(max_tokens=n_tokens, temperature=0.0, logit_bias=no_eog)
        for round_ in range(args.rounds):
            # ABBA order: a speed that drifts within a round favours neither side.
            if round_ % 2 == 0:
                free = decode(generator, unconstrained)
                bound = decode(generator, constrained())
            else:
                bound = decode(generator, constrained())
                free = decode(generator, unconstrained)
            jsonschema.validate(json.loads(bound[3]), SCHEMA)
            runs["unconstrained"].append(free[0])
            runs["unconstrained_us"].append(free[1])
            runs["constrained"].append(bound[0])
            runs["constrained_us"].append(bound[1])
            print(f"round {round_ + 1}/{args.rounds}: unconstrained {free[0]:.1f} tok/s, "
                  f"constrained {bound[0]:.1f} tok/s ({len(bound[2])} tokens)")
        compute, apply = replay_split(model, tokens)
        ctx.close()
        description = model.description

    mean = {k: statistics.fmean(v) for k, v in runs.items()}
    ratio = mean["constrained"] / mean["unconstrained"]
    # Each round's pair ran back to back: their ratio is the least disturbed by load that comes and goes.
    round_ratios = [c / u for c, u in zip(runs["constrained"], runs["unconstrained"], strict=True)]
    result = {
        "benchmark": "bench_constrained",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": description,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "llama": backend.system_info(),
                    # Other work on the machine moves both speeds; the ratio of each round's pair moves least.
                    "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]}},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "schema": SCHEMA,
        "prompt": PROMPT,
        "constrained_text": text,
        "tokens": n_tokens,
        "tokenizer_build_s": tokenizer_s,
        "tokens_per_s": {k: summary(v) for k, v in runs.items() if not k.endswith("_us")},
        "python_overhead_us_per_token": {k[: -len("_us")]: summary(v) for k, v in runs.items() if k.endswith("_us")},
        "constraint_us_per_token": {"processor_call": us(call_times), "llguidance_mask": us(compute),
                                    "numpy_masking": us(apply)},
        "ratio": ratio,
        "ratio_per_round": {"median": statistics.median(round_ratios), "runs": round_ratios},
        "target": 0.9,
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"bench_constrained-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{description}, {args.threads} threads, {args.rounds} rounds, {n_tokens} tokens, "
          f"tokenizer built in {tokenizer_s:.2f} s, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"greedy tok/s: unconstrained {mean['unconstrained']:.1f}, constrained {mean['constrained']:.1f}, "
          f"ratio {ratio:.3f} (median of rounds {statistics.median(round_ratios):.3f}; target 0.90)")
    print(f"python overhead per token: unconstrained {mean['unconstrained_us']:.0f} us, "
          f"constrained {mean['constrained_us']:.0f} us")
    for label, key in (("processor call", "processor_call"), ("  llguidance mask", "llguidance_mask"),
                       ("  numpy masking", "numpy_masking")):
        t = result["constraint_us_per_token"][key]
        print(f"{label:20} median {t['median']:7.1f} us   p99 {t['p99']:7.1f} us   max {t['max']:7.1f} us")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
