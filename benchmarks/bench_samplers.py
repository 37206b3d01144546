"""Every built-in sampling chain against greedy decoding: tokens/s of the whole token loop, same run.

Load from elsewhere on a machine moves tokens/s by more than the 5% at
stake, so greedy and the chain share one generation: even tokens are chosen
greedily, odd tokens by the chain (its processors too act on odd tokens
only). The time from one sampler call to the next (the sampler, the loop,
the next decode) is one token's time; its mean over greedy tokens against
its mean over the chain's tokens is the ratio of their tokens/s, taken
within milliseconds of each other. The ratio of the median steps is shown
too: it resists the odd step that another process preempted.
End-of-generation tokens are banned (a logit bias on every token) so that
every run lasts N_GEN tokens. Reported: medians over rounds.
Target: every chain >= 0.95 of greedy's tokens/s.

Then each chain's own cost, a measure that load disturbs less: the rows and
histories of one sampled run are recorded, and each chain (its processors,
then its sampler) is timed on every row, best of 3; reported are the median
and 90th percentile over rows, in microseconds per token.

Run:  .venv/bin/python benchmarks/bench_samplers.py [--threads 2] [--rounds 7] [--model SPEC]
Writes benchmarks/results/bench_samplers-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from harness import metadata, write_result

from helios_core import GenerationParams, Generator, Model, resolve_model
from helios_core.context import Context
from helios_core.sampling import (
    SamplingState,
    apply_processors,
    greedy,
    make_dry_penalty,
    make_mirostat_v2,
    make_sampler,
)

N_GEN = 128
PROMPT = "The history of the city begins"
TARGET = 0.95

# name -> (sampler factory, processor factories): built anew for every run, as the engine does per request.
Chain = tuple[Callable[[], object], tuple[Callable[[], object], ...]]
CHAINS: dict[str, Chain] = {
    "greedy": (lambda: make_sampler(0.0), ()),
    "temperature 0.8": (lambda: make_sampler(0.8), ()),
    "temperature 1.0": (lambda: make_sampler(1.0), ()),
    "top-k 40": (lambda: make_sampler(0.8, top_k=40), ()),
    "top-p 0.95": (lambda: make_sampler(0.8, top_p=0.95), ()),
    "min-p 0.05": (lambda: make_sampler(0.8, min_p=0.05), ()),
    "llama-server default": (lambda: make_sampler(0.8, top_k=40, top_p=0.95, min_p=0.05), ()),
    "typical-p 0.95": (lambda: make_sampler(0.8, typical_p=0.95), ()),
    "top-n-sigma 1.0": (lambda: make_sampler(0.8, top_n_sigma=1.0), ()),
    "xtc 0.1 / 0.5": (lambda: make_sampler(0.8, xtc_threshold=0.1, xtc_probability=0.5), ()),
    "dry 0.8 + min-p": (lambda: make_sampler(0.8, min_p=0.05), (lambda: make_dry_penalty(0.8),)),
    "mirostat v2 (5, 0.1)": (lambda: make_mirostat_v2(5.0, 0.1, 0.8), ()),
}


def run(generator: Generator, chain: Chain, bias: dict[int, float], seed: int) -> dict[str, float]:
    """One generation alternating greedy (even tokens) and the chain (odd): tokens/s of each."""
    new_sampler, new_processors = chain
    sampler = new_sampler()
    stamps: list[float] = []

    def alternate(logits: np.ndarray, state: SamplingState) -> int:
        stamps.append(time.perf_counter())
        return sampler(logits, state) if state.step % 2 else greedy(logits, state)

    def on_odd_tokens(process):
        return lambda logits, state: process(logits, state) if state.step % 2 else logits

    params = GenerationParams(
        max_tokens=N_GEN,
        seed=seed,
        logit_bias=bias,
        sampler=alternate,
        processors=[on_odd_tokens(make()) for make in new_processors],
    )
    generator.cache.forget(generator.ctx)
    count = sum(1 for _ in generator.generate(PROMPT, params))
    if count != N_GEN:
        raise RuntimeError(f"generation ended after {count} tokens; the benchmark needs {N_GEN}")
    # Interval i runs from sampler call i to call i + 1: sampler i, the loop, the decode of token i.
    intervals = np.diff(np.array(stamps))
    greedy_s, chain_s = intervals[0::2], intervals[1::2]
    return {
        "ratio": float(greedy_s.mean() / chain_s.mean()),
        "tokens_per_s": float(1 / chain_s.mean()),
        "greedy_tokens_per_s": float(1 / greedy_s.mean()),
        # a step that another process preempted weighs on a mean: the median step resists that
        "ratio_of_median_steps": float(np.median(greedy_s) / np.median(chain_s)),
    }


def record_rows(generator: Generator, bias: dict[int, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The logits rows (after the bias) and token histories of one sampled run (temperature 0.8)."""
    rows: list[tuple[np.ndarray, np.ndarray]] = []

    def capture(logits: np.ndarray, state: SamplingState) -> np.ndarray:
        rows.append((logits.copy(), state.tokens.copy()))
        return logits

    generator.cache.forget(generator.ctx)
    params = GenerationParams(max_tokens=N_GEN, temperature=0.8, seed=0, logit_bias=bias, processors=[capture])
    generator.generate(PROMPT, params).text()
    return rows


def sampler_cost(chain: Chain, rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Median and 90th percentile over rows of the best of 3 timings of processors + sampler, in us."""
    new_sampler, new_processors = chain
    sampler, processors = new_sampler(), [make() for make in new_processors]
    rng = np.random.default_rng(0)
    costs = []
    for logits, tokens in rows:
        state = SamplingState(tokens, rng, 0, 0)
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            sampler(apply_processors(logits, processors, state), state)
            best = min(best, time.perf_counter() - start)
        costs.append(1e6 * best)
    return statistics.median(costs), float(np.percentile(costs, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    path = resolve_model(args.model)
    names = [name for name in CHAINS if name != "greedy"]
    runs: dict[str, dict[str, list[float]]] = {
        name: {"ratio": [], "tokens_per_s": [], "greedy_tokens_per_s": [], "ratio_of_median_steps": []}
        for name in names
    }
    with Model(path) as model:
        bias = {t: -100.0 for t in range(model.vocab.n_vocab) if model.vocab.is_eog(t)}
        ctx = Context(model, n_ctx=256, n_batch=64, n_threads=args.threads)
        generator = Generator(model, ctx)
        run(generator, CHAINS["temperature 0.8"], bias, 0)  # warm-up
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                for key, value in run(generator, CHAINS[name], bias, seed=round_).items():
                    runs[name][key].append(value)
            worst = min(names, key=lambda n: runs[n]["ratio"][-1])
            print(f"round {round_ + 1}/{args.rounds}: lowest ratio {worst} {runs[worst]['ratio'][-1]:.3f}")
        rows = record_rows(generator, bias)
        costs = {name: sampler_cost(chain, rows) for name, chain in CHAINS.items()}
        ctx.close()
        description = model.description

    median = {name: {key: statistics.median(values) for key, values in record.items()} for name, record in runs.items()}
    result = {
        **metadata("bench_samplers", model=description, threads=args.threads, rounds=args.rounds, tokens=N_GEN),
        "median": median,
        "runs": runs,
        "sampler_us_per_token": {name: {"median": m, "p90": p90} for name, (m, p90) in costs.items()},
        "target": TARGET,
    }
    write_result(result)

    print(f"\n{description}, {args.threads} threads, {args.rounds} rounds of {N_GEN} tokens; medians over rounds")
    print(f"{'chain':24}{'tok/s':>8}{'greedy':>8}{'ratio':>8}{'of medians':>12}{'sampler us median':>19}{'p90':>6}")
    print(f"{'greedy':24}{'':>36}{costs['greedy'][0]:>19.0f}{costs['greedy'][1]:>6.0f}")
    for name in names:
        m = median[name]
        flag = "" if m["ratio"] >= TARGET else "  below target"
        print(
            f"{name:24}{m['tokens_per_s']:>8.1f}{m['greedy_tokens_per_s']:>8.1f}{m['ratio']:>8.3f}"
            f"{m['ratio_of_median_steps']:>12.3f}{costs[name][0]:>19.0f}{costs[name][1]:>6.0f}{flag}"
        )


if __name__ == "__main__":
    main()
