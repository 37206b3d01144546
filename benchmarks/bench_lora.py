"""LoRA adapter sets and batching: 4 streaming clients on 2 different adapter sets vs 4 on one set.

llama.cpp applies adapters per context, so a scheduler step makes one decode per adapter set in use:
4 clients on one set share one decode of 4 rows a step, 4 clients split 2 + 2 over two sets make
two decodes of 2 rows. This measures what that costs in aggregate generated tokens/s, on helios
and, as the peer, on llama-server (which does not batch requests with different adapters either).

helios runs with --spec off: prompt-lookup drafts (its default) speed up some texts more than
others, which would blur the comparison between the configurations (llama-server drafts nothing
without a draft model). One server of each kind with the two adapters (harness.write_adapter: rank 8 on the attention
projections of every layer, off by default) and --parallel 4; the configurations take turns
(ROUNDS of each, the median kept), so a load change on a shared machine hits them alike:
- base: no adapter;
- one set: every client with adapter 0 at scale 1;
- two sets: clients 0 and 2 with adapter 0, clients 1 and 3 with adapter 1.

Run:  .venv/bin/python benchmarks/bench_lora.py [--max-tokens 64] [--rounds 3] [--threads 2]
Writes benchmarks/results/bench_lora-<timestamp>.json and .png (with the load average before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_server import PROMPTS
from harness import figure, http_client, metadata, start_server, stream_completion, write_adapter, write_result

from helios_core import default_model_path
from helios_core.model import Model

CLIENTS = 4
CTX_PER_SLOT = 1024
CONFIGS = {  # name: the lora field of client i's requests
    "base": lambda i: [],
    "one set": lambda i: [{"id": 0, "scale": 1.0}],
    "two sets": lambda i: [{"id": i % 2, "scale": 1.0}],
}


def start(kind: str, threads: int, model: Path, adapters: list[Path]):
    """A server with `adapters` loaded and off by default (requests pick theirs), CLIENTS slots."""
    if kind == "helios":
        lora = [arg for path in adapters for arg in ("--lora", f"{path}:0")]
    else:
        lora = ["--lora-init-without-apply", *(arg for path in adapters for arg in ("--lora", str(path)))]
    return start_server(kind, model, threads, parallel=CLIENTS, ctx_per_slot=CTX_PER_SLOT, extra=lora)


async def stream_one(client, url: str, prompt: str, max_tokens: int, lora: list) -> int:
    """One streamed greedy completion under `lora` ([] is the server's default: no adapter); its tokens."""
    # ignore_eos: every completion is max_tokens long, whatever an adapter makes of the text (random adapters
    # end some early), so the configurations generate the same tokens.
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "lora": lora, "ignore_eos": True}
    return (await stream_completion(client, url, body))["tokens"]


async def load(url: str, config: str, max_tokens: int) -> float:
    """Aggregate generated tokens/s of CLIENTS clients, each streaming one completion under `config`."""
    # (max_tokens each, checked: a server that ignored ignore_eos would make the configurations incomparable)
    async with http_client() as client:
        await asyncio.gather(*(stream_one(client, url, "Warm up.", 2, CONFIGS[config](i)) for i in range(CLIENTS)))
        started = time.perf_counter()
        tokens = await asyncio.gather(
            *(stream_one(client, url, PROMPTS[i], max_tokens, CONFIGS[config](i)) for i in range(CLIENTS))
        )
        wall = time.perf_counter() - started
        assert tokens == [max_tokens] * CLIENTS, f"{url}: {config} generated {tokens} tokens"
        return sum(tokens) / wall


def plot(result: dict, path: Path) -> None:
    title = (
        f"{CLIENTS} streaming clients, {result['threads']} threads, max_tokens {result['max_tokens']}, "
        f"load {result['load_average']['before'][0]:.1f}"
    )
    with figure(path, title) as (ax,):
        width = 0.38
        for k, kind in enumerate(result["servers"]):
            values = [result["tokens_per_s"][kind][config] for config in CONFIGS]
            bars = ax.bar([i + (k - 0.5) * width for i in range(len(CONFIGS))], values, width, label=kind)
            ax.bar_label(bars, fmt="%.1f")
        ax.set_xticks(range(len(CONFIGS)), list(CONFIGS))
        ax.set_ylabel("aggregate generated tok/s (median)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration (the median is kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    model_path = default_model_path()
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        with Model(model_path, vocab_only=False) as model:
            adapters = [
                write_adapter(Path(folder) / f"{name}.gguf", model, seed=seed) for seed, name in enumerate(("a", "b"))
            ]
        for kind in ("llama-server", "helios"):
            server = start(kind, args.threads, model_path, adapters)
            runs[kind] = {config: [] for config in CONFIGS}
            try:
                for _ in range(args.rounds):
                    for config in CONFIGS:
                        runs[kind][config].append(asyncio.run(load(server.url, config, args.max_tokens)))
                        print(f"{kind:13} {config:9} {runs[kind][config][-1]:6.1f} tok/s", flush=True)
            finally:
                server.stop()
    medians = {kind: {config: statistics.median(v) for config, v in configs.items()} for kind, configs in runs.items()}
    ratios = {
        kind: {"two_sets_over_one_set": m["two sets"] / m["one set"], "one_set_over_base": m["one set"] / m["base"]}
        for kind, m in medians.items()
    }
    result = metadata(
        "bench_lora",
        model=model_path.name,
        threads=args.threads,
        clients=CLIENTS,
        max_tokens=args.max_tokens,
        rounds=args.rounds,
        adapters="2 random LoRA adapters, rank 8, attention q/k/v/output of every layer (harness.write_adapter)",
        load_average={"before": load_before, "after": os.getloadavg()},
        servers=list(runs),
        runs_tokens_per_s=runs,
        tokens_per_s=medians,
        ratios=ratios,
    )
    write_result(result, plot)
    for kind, m in medians.items():
        print(
            f"{kind:13} "
            + "  ".join(f"{config} {value:6.1f}" for config, value in m.items())
            + f"  two/one {ratios[kind]['two_sets_over_one_set']:.3f}"
            + f"  one/base {ratios[kind]['one_set_over_base']:.3f}"
        )
    print(f"load average before {load_before[0]:.2f}, after {result['load_average']['after'][0]:.2f}")


if __name__ == "__main__":
    main()
