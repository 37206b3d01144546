"""Embedding throughput: helios-engine serve against llama-server --embeddings, same build, model, threads, texts.

Both servers pool by mean and run on the same threads. Both are started once, warmed with one
request of 64 texts (helios answers /health only once its start-up work is done);
then, in turn (one idle while the other is timed), each embeds the same 200 texts over
HTTP in two ways:

- batch:      one request holding all 200 texts (an ingestion job);
- concurrent: 200 one-text requests from --clients (8) concurrent clients (a search service).

The number compared is embedded tokens per second of wall time (usage.prompt_tokens over the
seconds the requests took). Each round times every mode on both servers, the first server
alternating between rounds, so load from elsewhere on the machine falls on both alike; the
machine's load average is recorded before and after each round. llama-server runs with its own
defaults for everything else (4 slots, n_batch = n_ubatch = 512 with --embeddings); helios
with its defaults (--embedding-batch 512, up to 64 inputs a decode).

Run:  make tools && .venv/bin/python benchmarks/bench_embed.py [--rounds 5] [--threads 2] [--clients 8]
Writes benchmarks/results/bench_embed-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
from harness import ROOT, http_client, metadata, start_server, summary, write_result

from helios_core import default_model_path

N_TEXTS = 200
KINDS = ("llama-server", "helios")
MODES = ("batch", "concurrent")


def texts(n: int = N_TEXTS) -> list[str]:
    """n sentences of the vendored llama.cpp README and docs (prose, lists, commands; ~3 to 100 tokens), in order."""
    tree = ROOT / "vendor" / "llama.cpp"
    docs = [tree / "README.md", *sorted((tree / "docs").glob("*.md"))]
    text = "\n".join(path.read_text() for path in docs)
    plain = re.sub(r"<[^>]+>|\[([^\]]*)\]\([^)]*\)", r"\1", text)  # tags and link targets out, link text kept
    pieces = [p.strip(" #*-|>`\t") for line in plain.splitlines() for p in re.split(r"(?<=[.!?])\s+", line)]
    prose = (p for p in pieces if 12 <= len(p) <= 400 and not p.startswith(("![", "http")))  # no badges, bare links
    found = list(dict.fromkeys(prose))  # each text once
    if len(found) < n:
        sys.exit(f"the vendored docs gave only {len(found)} texts; {n} wanted")
    return found[:n]


def start(kind: str, threads: int, model: Path):
    """A server pooling by mean, with its own defaults for the rest."""
    extra = ("--pooling", "mean") if kind == "helios" else ("--embeddings", "--pooling", "mean")
    return start_server(kind, model, threads, extra=extra)


async def embed(client: httpx.AsyncClient, url: str, inputs: list[str]) -> int:
    """One /v1/embeddings request; the tokens it embedded (usage.prompt_tokens)."""
    response = await client.post(f"{url}/v1/embeddings", json={"input": inputs, "model": "bench"})
    response.raise_for_status()
    body = response.json()
    assert len(body["data"]) == len(inputs), body
    return body["usage"]["prompt_tokens"]


async def run_mode(url: str, mode: str, items: list[str], clients: int) -> dict:
    async with http_client() as client:
        started = time.perf_counter()
        if mode == "batch":
            tokens = await embed(client, url, items)
        else:
            todo = iter(items)

            async def user() -> int:
                return sum([await embed(client, url, [text]) for text in todo])

            tokens = sum(await asyncio.gather(*(user() for _ in range(clients))))
        seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the concurrent mode")
    args = parser.parse_args()

    model = default_model_path()
    items = texts()
    runs: dict[str, dict[str, list[float]]] = {kind: {mode: [] for mode in MODES} for kind in KINDS}
    tokens = {}
    servers = {kind: start(kind, args.threads, model) for kind in KINDS}
    try:
        # Warm-up, with decodes as large as the timed ones: helios makes its embedding context here, and
        # llama.cpp grows its output buffers (a logits row per token) to their size, in both servers.
        for server in servers.values():
            asyncio.run(run_mode(server.url, "batch", items[:64], 1))
        load = [os.getloadavg()[0]]
        for round_ in range(args.rounds):
            order = KINDS if round_ % 2 == 0 else KINDS[::-1]
            for mode in MODES:
                for kind in order:
                    result = asyncio.run(run_mode(servers[kind].url, mode, items, args.clients))
                    runs[kind][mode].append(result["tokens_per_s"])
                    tokens[kind] = result["tokens"]
            load.append(os.getloadavg()[0])
            print(
                f"round {round_ + 1}/{args.rounds} "
                + "  ".join(
                    f"{mode}: helios {runs['helios'][mode][-1]:6.1f}, "
                    f"llama-server {runs['llama-server'][mode][-1]:6.1f}"
                    for mode in MODES
                )
                + f" tok/s (load {load[-1]:.1f})",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()

    mean = {kind: {mode: statistics.fmean(v) for mode, v in modes.items()} for kind, modes in runs.items()}
    ratios = {mode: mean["helios"][mode] / mean["llama-server"][mode] for mode in MODES}
    round_ratios = {
        mode: [h / ls for h, ls in zip(runs["helios"][mode], runs["llama-server"][mode], strict=True)] for mode in MODES
    }
    result = metadata(
        "bench_embed",
        model=model.name,
        threads=args.threads,
        texts=len(items),
        tokens=tokens,  # per pass, as each server's usage counted them
        clients=args.clients,
        tokens_per_s={kind: {mode: summary(v) for mode, v in modes.items()} for kind, modes in runs.items()},
        ratios=ratios,  # of the means
        ratio_per_round={mode: {"median": statistics.median(r), "runs": r} for mode, r in round_ratios.items()},
        target=1.0,
    )
    result["machine"]["load_average_1min"] = load  # before the first round and after each: other work on the machine
    write_result(result)

    print(
        f"\n{model.name}, {args.threads} threads, {len(items)} texts ({tokens.get('helios')} tokens), "
        f"{args.rounds} rounds, load average {' '.join(f'{x:.1f}' for x in load)}"
    )
    print(f"{'':24}{'helios':>10}{'llama-server':>14}{'ratio':>8}{'median ratio of rounds':>24}")
    for mode in MODES:
        print(
            f"{mode + ' tok/s':24}{mean['helios'][mode]:>10.1f}{mean['llama-server'][mode]:>14.1f}"
            f"{ratios[mode]:>8.3f}{statistics.median(round_ratios[mode]):>24.3f}"
        )


if __name__ == "__main__":
    main()
