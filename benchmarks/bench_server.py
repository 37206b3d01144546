"""helios-engine serve against llama-server, same build, model, threads, prompts; K concurrent streams.

For K = 1, 2, 4, 8 it starts `helios-engine serve --parallel K` and
`llama-server -np K` (built from the same vendor tree) on loopback, runs K
clients that each stream ROUNDS greedy completions, and reports aggregate
generated tokens/s, time to first token p50/p95 and per-stream tokens/s.
Then, with --parallel 1 on both, time to first token for a prompt with a
1,000-token system prompt: cold, then a cache hit that shares it.

Run:  make bench-server
      .venv/bin/python benchmarks/bench_server.py [--clients 1 2 4 8] [--max-tokens 64] [--threads 2]
Writes benchmarks/results/bench_server-<timestamp>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "vendor"), str(ROOT)]

import build as vendor_build  # noqa: E402

from helios_core import default_model_path  # noqa: E402
from tests.server_process import free_port, wait_healthy  # noqa: E402

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


class Server:
    """One server process on a free loopback port; waits until /health answers 200.

    helios answers 200 only once its start-up work (llguidance's and DRY's views of the
    vocabulary) is done, so nothing of it runs beside the measurements.
    """

    def __init__(self, name: str, argv: list[str], port: int):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(self.url, self.process, timeout=180)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(kind: str, parallel: int, threads: int, model: Path, extra: tuple[str, ...] = ()) -> Server:
    """`extra`: options both servers spell alike (e.g. --rpc HOST:PORT -ngl 99)."""
    port = free_port()
    if kind == "helios":
        # Like for like with llama-server, which drafts nothing unless told: helios's speculative
        # decoding (on by default) is measured against llama-server's own by bench_speculative.
        spec = () if "--spec" in extra else ("--spec", "off")
        argv = [
            sys.executable,
            "-m",
            "helios_cli",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            "--parallel",
            str(parallel),
            "--ctx-size",
            str(CTX_PER_SLOT),
            "--threads",
            str(threads),
            *spec,
            *extra,
        ]
    else:
        binary = vendor_build.tools_dir() / "llama-server"
        if not binary.exists():
            sys.exit(f"{binary} is missing: run `make tools` first")
        argv = [
            str(binary),
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-np",
            str(parallel),
            "-c",
            str(CTX_PER_SLOT * parallel),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "--no-webui",
            *extra,
        ]
    return Server(kind, argv, port)


async def stream_one(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy completion: (time to first token, tokens, seconds from first to last token)."""
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first = last = None
    chunks = 0
    usage_tokens = None
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage_tokens = data["usage"]["completion_tokens"]
            for choice in data.get("choices", []):
                if choice.get("text"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    tokens = usage_tokens or chunks
    return {
        "ttft": (first or time.perf_counter()) - sent,
        "tokens": tokens,
        "stream_seconds": (last - first) if first and last and last > first else 0.0,
    }


def http_client() -> httpx.AsyncClient:
    # A fresh connection per request for both servers: a kept-alive connection that the server
    # closes between requests would otherwise fail the next one, whichever server it is.
    return httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_keepalive_connections=0))


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = result["clients"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for kind, style in (("helios", "o-"), ("llama-server", "s--")):
        rows = [result["runs"][kind][str(k)] for k in ks]
        axes[0].plot(ks, [r["aggregate_tokens_per_s"] for r in rows], style, label=kind)
        axes[1].plot(ks, [r["ttft_p50_s"] for r in rows], style, label=f"{kind} p50")
        axes[1].plot(ks, [r["ttft_p95_s"] for r in rows], style, alpha=0.4, label=f"{kind} p95")
        axes[2].plot(ks, [r["per_stream_tokens_per_s"] for r in rows], style, label=kind)
    for ax, title in zip(
        axes, ("aggregate generated tok/s", "time to first token (s)", "per-stream tok/s"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("concurrent streaming clients (= slots)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['model']}, {result['threads']} threads, greedy, max_tokens {result['max_tokens']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="completions each client streams")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    model = default_model_path()

    runs: dict[str, dict[str, dict]] = {"helios": {}, "llama-server": {}}
    for k in args.clients:
        for kind in ("llama-server", "helios"):
            server = start(kind, k, args.threads, model)
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
        server = start(kind, 1, args.threads, model)
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
    result = {
        "benchmark": "bench_server",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model.name,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "clients": args.clients,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "runs": runs,
        "helios_over_llama_server": ratio,
        "scaling": scaling,
        "cache_hit": hits,
        "targets": {"helios_over_llama_server": 1.0, "helios_k4_over_k1": 1.45, "hit_over_cold": 0.15},
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench_server-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, stem.with_suffix(".png"))

    print(f"\n{'K':>3} {'helios tok/s':>13} {'llama-server':>13} {'ratio':>7}")
    for k in args.clients:
        print(
            f"{k:>3} {runs['helios'][str(k)]['aggregate_tokens_per_s']:>13.1f} "
            f"{runs['llama-server'][str(k)]['aggregate_tokens_per_s']:>13.1f} {ratio[str(k)]:>7.3f}"
        )
    for name, value in scaling.items():
        print(f"{name}: {value:.2f}")
    print(f"wrote {stem.relative_to(ROOT)}.json and .png")


if __name__ == "__main__":
    main()
