"""helios's token loop against llama-bench, same build, same model, same threads, one run.

Measures, alternating the two in rounds so drift hits both alike:
  - helios greedy decode tok/s          vs llama-bench tg128
  - helios sampled decode tok/s (temperature 0.8, top-p 0.95)  vs tg128
  - helios prompt tok/s on a 512-token prompt                  vs pp512
and helios's Python overhead per token: wall time per step minus llama.cpp's
own decode time from its perf counters; and the same loop's cost per token with
llama_decode made a no-op, so the caches stay warm, as they do when the weights
live on a GPU (on a CPU each decode evicts the loop's code and objects). Each chain's path is reported: "backend"
(drawn in the compute graph, helios_core.sampling.backend) or "python" (NumPy
over the logits row); --path python keeps both in Python, --path backend puts
greedy in the graph on a CPU too.

Run:  make bench            (builds llama-bench first)
      .venv/bin/python benchmarks/bench_generate.py [--rounds 3] [--threads 2] [--model SPEC]
      [--path auto|python|backend] [--n-gpu-layers -1]
Writes benchmarks/results/bench_generate-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from harness import metadata, summary, tool, write_result

from helios_core import GenerationParams, Generator, Model, _llama, resolve_model
from helios_core.context import Context

N_GEN = 128
N_PROMPT = 512
GEN_PROMPT = "The three primary colors are"


def llama_bench(model: Path, threads: int, n_gpu_layers: int) -> dict[str, float]:
    """One llama-bench run of pp512 and tg128: tokens/s of each."""
    binary = tool("llama-bench")
    out = subprocess.run(
        [
            str(binary),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-ngl",
            str(n_gpu_layers),
            "-p",
            str(N_PROMPT),
            "-n",
            str(N_GEN),
            "-r",
            "1",
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results = {}
    for test in json.loads(out):
        key = "pp512" if test["n_prompt"] == N_PROMPT else "tg128"
        results[key] = float(test["avg_ts"])
    return results


def helios_decode(generator: Generator, params: GenerationParams) -> dict[str, float]:
    """tok/s over N_GEN generated tokens, and Python's share of each step in microseconds."""
    ctx = generator.ctx
    generator.cache.forget(ctx)
    generation = generator.generate(GEN_PROMPT, params)
    first = next(generation)  # the prompt is decoded and the first token sampled
    ctx.perf_reset()
    start = time.perf_counter()
    count = 1 + sum(1 for _ in generation)
    wall = time.perf_counter() - start
    steps = count - 1  # decodes measured: one per token after the first
    if steps < N_GEN - 1 or first.finish_reason:
        raise RuntimeError(f"generation ended after {count} tokens; the benchmark needs {N_GEN}")
    decode_ms = ctx.perf().eval_ms
    return {
        "tokens_per_s": steps / wall,
        "python_overhead_us_per_token": 1e6 * (wall - decode_ms / 1000) / steps,
        # "backend": drawn in the compute graph (helios_core.sampling.backend); "python": NumPy over the row.
        "path": "python" if generation.request.backend is None else "backend",
    }


def helios_warm_loop(generator: Generator, params: GenerationParams) -> float:
    """Python's share per token with warm caches, in microseconds: the loop with llama_decode made a no-op.

    On a CPU every decode streams the weights through the caches, so the loop after it runs
    cold; where the weights live on a GPU they never pass through the CPU's caches, and this is
    nearer what the loop costs there. After two real steps, decode is replaced by a call that
    returns at once, so each step re-reads the last real logits row (greedy picks one token
    again and again, a sampled chain draws from one distribution); the wall time per step is then
    the loop's own.
    """
    ctx = generator.ctx
    generator.cache.forget(ctx)
    generation = generator.generate(GEN_PROMPT, params)
    next(generation)
    next(generation)
    real = _llama.llama_decode
    _llama.llama_decode = lambda ctx_ptr, batch: 0
    try:
        start = time.perf_counter()
        count = sum(1 for _ in generation)
        wall = time.perf_counter() - start
    finally:
        _llama.llama_decode = real
    if count < N_GEN // 2:
        raise RuntimeError(f"the warm loop ended after {count} tokens")
    return 1e6 * wall / count


def helios_prompt(model: Model, ctx: Context, generator: Generator) -> float:
    """tok/s of one 512-token prompt decoded from an empty cache, as pp512 is."""
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 200).split()
    tokens = model.vocab.tokenize(" ".join(words))[:N_PROMPT]
    generator.cache.forget(ctx)
    start = time.perf_counter()
    next(generator.generate(tokens, GenerationParams(max_tokens=1, temperature=0.0)))
    return N_PROMPT / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--n-gpu-layers", type=int, default=0, help="layers on the GPU, for both sides (-1: all; a GPU build only)"
    )
    parser.add_argument(
        "--path",
        choices=("auto", "python", "backend"),
        default="auto",
        help="auto: where it pays (top-k; greedy with the logits on a GPU); python: none; backend: greedy too",
    )
    args = parser.parse_args()

    path = resolve_model(args.model)
    greedy = GenerationParams(max_tokens=N_GEN, temperature=0.0)
    sampled = GenerationParams(max_tokens=N_GEN, temperature=0.8, top_p=0.95, seed=0)
    runs: dict[str, list[float]] = {
        k: []
        for k in (
            "pp512",
            "tg128",
            "greedy",
            "sampled",
            "prompt",
            "greedy_us",
            "sampled_us",
            "greedy_warm_us",
            "sampled_warm_us",
        )
    }
    with Model(path, n_gpu_layers=args.n_gpu_layers) as model:
        # The same shape as llama-bench's context: a 512-token batch, default cache and attention.
        ctx = Context(model, n_ctx=N_PROMPT + N_GEN + 64, n_batch=N_PROMPT, n_threads=args.threads)
        generator = Generator(model, ctx, backend_sampling={"python": False, "backend": True}.get(args.path))
        paths = {}
        helios_decode(generator, greedy)  # warm-up, as llama-bench warms up
        for round_ in range(args.rounds):
            theirs = llama_bench(path, args.threads, args.n_gpu_layers)
            runs["pp512"].append(theirs["pp512"])
            runs["tg128"].append(theirs["tg128"])
            g = helios_decode(generator, greedy)
            s = helios_decode(generator, sampled)
            runs["greedy"].append(g["tokens_per_s"])
            runs["greedy_us"].append(g["python_overhead_us_per_token"])
            runs["sampled"].append(s["tokens_per_s"])
            runs["sampled_us"].append(s["python_overhead_us_per_token"])
            paths = {"greedy": g["path"], "sampled": s["path"]}
            runs["prompt"].append(helios_prompt(model, ctx, generator))
            runs["greedy_warm_us"].append(helios_warm_loop(generator, greedy))
            runs["sampled_warm_us"].append(helios_warm_loop(generator, sampled))
            print(
                f"round {round_ + 1}/{args.rounds}: tg128 {theirs['tg128']:.1f}, greedy {g['tokens_per_s']:.1f}, "
                f"sampled {s['tokens_per_s']:.1f}, pp512 {theirs['pp512']:.1f}, prompt {runs['prompt'][-1]:.1f}"
            )
        ctx.close()
        description = model.description

    mean = {k: statistics.fmean(v) for k, v in runs.items()}
    ratios = {
        "greedy_vs_tg128": mean["greedy"] / mean["tg128"],
        "sampled_vs_tg128": mean["sampled"] / mean["tg128"],
        "prompt_vs_pp512": mean["prompt"] / mean["pp512"],
    }
    result = metadata(
        "bench_generate",
        model=description,
        threads=args.threads,
        n_gpu_layers=args.n_gpu_layers,
        tokens_per_s={k: summary(v) for k, v in runs.items() if not k.endswith("_us")},
        python_overhead_us_per_token={"greedy": summary(runs["greedy_us"]), "sampled": summary(runs["sampled_us"])},
        # The same loop with llama_decode a no-op (helios_warm_loop): caches warm, as beside a GPU decode.
        python_us_per_token_warm={
            "greedy": summary(runs["greedy_warm_us"]),
            "sampled": summary(runs["sampled_warm_us"]),
        },
        ratios=ratios,
        paths=paths,
        targets={"greedy_vs_tg128": 0.98, "sampled_vs_tg128": 0.98, "prompt_vs_pp512": 0.97},
    )
    write_result(result)

    print(f"\n{description}, {args.threads} threads, {args.rounds} rounds")
    print(f"{'':24}{'helios':>10}{'llama-bench':>13}{'ratio':>8}{'target':>8}")
    rows = [
        ("greedy decode tok/s", "greedy", "tg128", "greedy_vs_tg128"),
        ("sampled decode tok/s", "sampled", "tg128", "sampled_vs_tg128"),
        ("prompt tok/s (512)", "prompt", "pp512", "prompt_vs_pp512"),
    ]
    for label, ours, theirs, ratio in rows:
        print(
            f"{label:24}{mean[ours]:>10.1f}{mean[theirs]:>13.1f}{ratios[ratio]:>8.3f}{result['targets'][ratio]:>8.2f}"
        )
    print(f"python overhead per token: greedy {mean['greedy_us']:.0f} us, sampled {mean['sampled_us']:.0f} us")
    print(
        f"python per token with warm caches (decode a no-op): greedy {mean['greedy_warm_us']:.0f} us, "
        f"sampled {mean['sampled_warm_us']:.0f} us"
    )
    print(f"sampling path: greedy {paths['greedy']}, sampled {paths['sampled']}")


if __name__ == "__main__":
    main()
