"""helios-engine serve against llama-server, same build, model, threads, prompts; K concurrent streams.

For K = 1, 2, 4, 8 it starts `helios-engine serve --parallel K` and
`llama-server -np K` (built from the same vendor tree) on loopback, runs K
clients that each stream ROUNDS greedy completions, and reports aggregate
generated tokens/s, time to first token p50/p95 and per-stream tokens/s.
Then, with --parallel 1 on both, time to first token for a prompt with a
1,000-token system prompt: cold, then a cache hit that shares it.

Run:  make bench-server
      .venv/bin/python benchmarks/bench_server.py [--clients 1 2 4 8] [--max-tokens 64] [--threads 2]
      [--n-gpu-layers -1]
Writes benchmarks/results/bench_server-<timestamp>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from harness import figure, http_client, metadata, start_server, stream_completion, write_result

from helios_core import default_model_path

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List the planets of the solar system and one fact about each.",
    "Describe the city of Lisbon in the style of a travel guide.",
    "What are the main causes of the French Revolution?",
    "Give a recipe for a simple tomato soup.",
    "Summarise the plot of Romeo and Juliet.",
    "Explain the difference between a list and a tuple in Python.",
]
CTX_PER_SLOT = 2048
SYSTEM_WORDS = "You are a meticulous assistant for a library. Follow the catalogue rules exactly. "


def start(kind: str, parallel: int, threads: int, model: Path, extra: tuple[str, ...] = ()):
    """One server of `kind` with `parallel` slots of CTX_PER_SLOT tokens."""
    return start_server(kind, model, threads, parallel=parallel, ctx_per_slot=CTX_PER_SLOT, extra=extra)


async def stream_one(client, url: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy completion: time to first token, tokens, seconds from first to last token."""
    return await stream_completion(client, url, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0})


async def load(url: str, clients: int, rounds: int, max_tokens: int) -> dict:
    async with http_client() as client:
        await stream_one(client, url, "Warm up.", 4)

        async def user(i: int) -> list[dict]:
            return [
                await stream_one(client, url, PROMPTS[(i + r * clients) % len(PROMPTS)], max_tokens)
                for r in range(rounds)
            ]

        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(user(i) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - started
    ttfts = sorted(r["ttft"] for r in results)
    per_stream = [(r["tokens"] - 1) / r["stream_seconds"] for r in results if r["stream_seconds"] > 0]
    return {
        "aggregate_tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p95_s": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))],
        "per_stream_tokens_per_s": statistics.fmean(per_stream) if per_stream else 0.0,
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results),
    }


async def cache_hit(url: str) -> dict:
    """TTFT with a 1,000-token shared system prompt: cold, then a second question that reuses it."""
    system = SYSTEM_WORDS * 60  # about 1,000 tokens for Gemma's tokenizer
    async with http_client() as client:
        cold = await stream_one(client, url, system + "\nQuestion: where are the atlases?", 8)
        hit = await stream_one(client, url, system + "\nQuestion: who may borrow rare books?", 8)
    return {"cold_ttft_s": cold["ttft"], "hit_ttft_s": hit["ttft"], "hit_over_cold": hit["ttft"] / cold["ttft"]}


def plot(result: dict, path: Path) -> None:
    ks = result["clients"]
    title = f"{result['model']}, {result['threads']} threads, greedy, max_tokens {result['max_tokens']}"
    with figure(path, title, ncols=3, size=(14, 4)) as axes:
        for kind, style in (("helios", "o-"), ("llama-server", "s--")):
            rows = [result["runs"][kind][str(k)] for k in ks]
            axes[0].plot(ks, [r["aggregate_tokens_per_s"] for r in rows], style, label=kind)
            axes[1].plot(ks, [r["ttft_p50_s"] for r in rows], style, label=f"{kind} p50")
            axes[1].plot(ks, [r["ttft_p95_s"] for r in rows], style, alpha=0.4, label=f"{kind} p95")
            axes[2].plot(ks, [r["per_stream_tokens_per_s"] for r in rows], style, label=kind)
        for ax, name in zip(
            axes, ("aggregate generated tok/s", "time to first token (s)", "per-stream tok/s"), strict=True
        ):
            ax.set_title(name)
            ax.set_xlabel("concurrent streaming clients (= slots)")
            ax.set_xticks(ks)
            ax.grid(alpha=0.3)
            ax.legend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="completions each client streams")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--n-gpu-layers", type=int, default=0, help="layers on the GPU, for both servers (-1: all; a GPU build only)"
    )
    args = parser.parse_args()
    offload = ("--n-gpu-layers", str(args.n_gpu_layers))
    model = default_model_path()

    runs: dict[str, dict[str, dict]] = {"helios": {}, "llama-server": {}}
    for k in args.clients:
        for kind in ("llama-server", "helios"):
            server = start(kind, k, args.threads, model, offload)
            try:
                runs[kind][str(k)] = asyncio.run(load(server.url, k, args.rounds, args.max_tokens))
            finally:
                server.stop()
            r = runs[kind][str(k)]
            print(
                f"K={k} {kind:13} aggregate {r['aggregate_tokens_per_s']:6.1f} tok/s  "
                f"TTFT p50 {r['ttft_p50_s']:.2f}s p95 {r['ttft_p95_s']:.2f}s  "
                f"per-stream {r['per_stream_tokens_per_s']:5.1f} tok/s",
                flush=True,
            )
    hits = {}
    for kind in ("llama-server", "helios"):
        server = start(kind, 1, args.threads, model, offload)
        try:
            hits[kind] = asyncio.run(cache_hit(server.url))
        finally:
            server.stop()
        print(
            f"cache hit {kind:13} cold {hits[kind]['cold_ttft_s']:.2f}s, hit {hits[kind]['hit_ttft_s']:.3f}s "
            f"({100 * hits[kind]['hit_over_cold']:.1f}% of cold)",
            flush=True,
        )

    ratio = {
        k: runs["helios"][k]["aggregate_tokens_per_s"] / runs["llama-server"][k]["aggregate_tokens_per_s"]
        for k in runs["helios"]
    }
    scaling = {}
    if "1" in runs["helios"] and "4" in runs["helios"]:
        scaling["helios_k4_over_k1"] = (
            runs["helios"]["4"]["aggregate_tokens_per_s"] / runs["helios"]["1"]["aggregate_tokens_per_s"]
        )
        scaling["llama_server_k4_over_k1"] = (
            runs["llama-server"]["4"]["aggregate_tokens_per_s"] / runs["llama-server"]["1"]["aggregate_tokens_per_s"]
        )
    result = metadata(
        "bench_server",
        model=model.name,
        threads=args.threads,
        n_gpu_layers=args.n_gpu_layers,
        max_tokens=args.max_tokens,
        rounds=args.rounds,
        clients=args.clients,
        runs=runs,
        helios_over_llama_server=ratio,
        scaling=scaling,
        cache_hit=hits,
        targets={"helios_over_llama_server": 1.0, "helios_k4_over_k1": 1.45, "hit_over_cold": 0.15},
    )
    write_result(result, plot)

    print(f"\n{'K':>3} {'helios tok/s':>13} {'llama-server':>13} {'ratio':>7}")
    for k in args.clients:
        print(
            f"{k:>3} {runs['helios'][str(k)]['aggregate_tokens_per_s']:>13.1f} "
            f"{runs['llama-server'][str(k)]['aggregate_tokens_per_s']:>13.1f} {ratio[str(k)]:>7.3f}"
        )
    for name, value in scaling.items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
