"""Speculative decoding: helios-engine serve with and without it, against llama-server with and without n-gram drafts.

Same build, model, threads and prompts, one run. Two workloads:

- copy:  copy-heavy, greedy: code rewritten with one change (the base model mostly copies it)
         and questions answered by quoting a given passage. Output repeats the prompt.
- free:  short prompts, sampled at temperature 0.9 (top-k 40, top-p 0.95, min-p 0.05: llama-server's
         defaults, sent to both) with a seed per prompt: little to copy.

Each engine serves each workload to 1 client and to 4 concurrent clients (`--parallel` = clients),
non-streamed completions, every prompt of the workload per client. Engines:

- helios-plain       helios-engine serve --spec off
- helios-spec        helios-engine serve (prompt lookup, the default)
- llama-plain        llama-server
- llama-<type>       llama-server --spec-type <type> for each of SPEC_TYPES (its n-gram drafters)

Reported per engine, workload and client count: aggregate generated tokens per second of wall
time, the acceptance rate (accepted / drafted tokens) and tokens per decode step of a sequence
(generated / (generated - accepted): 1 + the mean accepted draft per step), from each response's
`timings` (llama-server's shape, which helios also returns). Ratios: helios-spec over
helios-plain, and helios-spec over the best llama-server speculation.

Run:  .venv/bin/python benchmarks/bench_speculative.py [--clients 1 4] [--threads 2]
Writes benchmarks/results/bench_speculative-<timestamp>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from bench_server import start
from harness import figure, http_client, metadata, write_result

from helios_core import default_model_path

SPEC_TYPES = ("ngram-simple", "ngram-mod")
MAX_TOKENS = {"copy": 200, "free": 128}
SAMPLED = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "min_p": 0.05}

INVENTORY = '''class Inventory:
    """Items in a warehouse, counted by name."""

    def __init__(self):
        self.items = {}

    def add(self, name, count=1):
        if count <= 0:
            raise ValueError("count must be positive")
        self.items[name] = self.items.get(name, 0) + count

    def remove(self, name, count=1):
        have = self.items.get(name, 0)
        if count > have:
            raise KeyError(f"only {have} of {name} in stock")
        self.items[name] = have - count
        if self.items[name] == 0:
            del self.items[name]

    def total(self):
        return sum(self.items.values())

    def report(self):
        lines = [f"{name}: {count}" for name, count in sorted(self.items.items())]
        return "\\n".join(lines)
'''

PARSER = '''def parse_config(text):
    """Read key = value lines into a dict; # starts a comment."""
    config = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"line {number}: expected key = value")
        key, value = (part.strip() for part in line.split("=", 1))
        if not key:
            raise ValueError(f"line {number}: empty key")
        if value.lower() in ("true", "false"):
            value = value.lower() == "true"
        elif value.isdigit():
            value = int(value)
        config[key] = value
    return config


def merge(base, override):
    merged = dict(base)
    merged.update(override)
    return merged
'''

PASSAGE = (
    "The lighthouse at Cape Morrow was built in 1871 from granite quarried two miles inland. "
    "Its lamp was first lit with whale oil, then with kerosene from 1893, and it was electrified in 1936. "
    "The keeper's cottage, a low stone house with a slate roof, stands forty metres from the tower. "
    "Three families kept the light over ninety years: the Hallorans, the Pikes and the Ashdowns. "
    "In the great storm of 1912 the keeper, Thomas Pike, kept the lamp burning for three nights without sleep. "
    "The light was automated in 1961, and the last keeper left the cape in the spring of that year. "
    "Today the cottage is a small museum, open from May to September, and the tower can be climbed on Sundays."
)

COPY_PROMPTS = [
    f"```python\n{INVENTORY}```\n\nThe same code again, with `total` renamed to `count_all`:\n\n```python\n",
    f"```python\n{PARSER}```\n\nThe same code again, with `merge` renamed to `combine`:\n\n```python\n",
    f"Passage: {PASSAGE}\n\nQuestion: What happened in 1912, and when was the light automated? "
    'Answer by quoting the passage word for word.\nAnswer: "',
    f"Passage: {PASSAGE}\n\nQuestion: Who kept the light, and what is the cottage today? "
    'Answer by quoting the passage word for word.\nAnswer: "',
]

FREE_PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "Describe the city of Lisbon in the style of a travel guide.",
    "What are the main causes of the French Revolution?",
]

WORKLOADS = {"copy": COPY_PROMPTS, "free": FREE_PROMPTS}


def engines() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (server kind, its extra options)."""
    table = {
        "helios-plain": ("helios", ("--spec", "off")),
        "helios-spec": ("helios", ("--spec", "prompt-lookup")),
        "llama-plain": ("llama-server", ()),
    }
    for kind in SPEC_TYPES:
        table[f"llama-{kind}"] = ("llama-server", ("--spec-type", kind))
    return table


async def complete(client, url: str, prompt: str, workload: str, seed: int) -> dict:
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS[workload], "seed": seed}
    # Sampled: the same chain on both servers, spelt out (llama-server's defaults: helios's own
    # defaults are OpenAI's, with no top-k or min-p, which would sample a wider set than llama-server's).
    body.update({"temperature": 0.0} if workload == "copy" else SAMPLED)
    response = await client.post(f"{url}/v1/completions", json=body)
    response.raise_for_status()
    data = response.json()
    timings = data.get("timings") or {}
    return {
        "tokens": data["usage"]["completion_tokens"],
        "drafted": timings.get("draft_n", 0),
        "accepted": timings.get("draft_n_accepted", 0),
    }


async def run_workload(url: str, workload: str, clients: int) -> dict:
    prompts = WORKLOADS[workload]
    async with http_client() as client:
        await complete(client, url, "Warm up.", "free", 0)

        async def user(i: int) -> list[dict]:
            # Each client runs every prompt, starting at a different one.
            return [
                await complete(client, url, prompts[(i + j) % len(prompts)], workload, 1000 + j)
                for j in range(len(prompts))
            ]

        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(user(i) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    drafted = sum(r["drafted"] for r in results)
    accepted = sum(r["accepted"] for r in results)
    return {
        "tokens_per_s": tokens / wall,
        "tokens": tokens,
        "seconds": wall,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else 0.0,
        "tokens_per_step": tokens / max(tokens - accepted, 1),
    }


def plot(result: dict, path: Path) -> None:
    names = list(result["engines"])
    title = f"{result['model']}, {result['threads']} threads: speculative decoding"
    with figure(path, title, ncols=2, size=(11, 4)) as axes:
        for ax, workload in zip(axes, WORKLOADS, strict=True):
            width = 0.8 / len(result["clients"])
            for j, k in enumerate(result["clients"]):
                values = [result["runs"][name][workload][str(k)]["tokens_per_s"] for name in names]
                ax.bar([i + j * width for i in range(len(names))], values, width, label=f"{k} client(s)")
            ax.set_xticks([i + width * (len(result["clients"]) - 1) / 2 for i in range(len(names))])
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{workload}: aggregate generated tok/s")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    model = default_model_path()
    table = engines()
    runs: dict[str, dict[str, dict]] = {name: {w: {} for w in WORKLOADS} for name in table}
    load = [os.getloadavg()[0]]
    for k in args.clients:
        for name, (kind, extra) in table.items():
            server = start(kind, k, args.threads, model, extra)
            try:
                for workload in WORKLOADS:
                    r = runs[name][workload][str(k)] = asyncio.run(run_workload(server.url, workload, k))
                    print(
                        f"K={k} {workload:4} {name:18} {r['tokens_per_s']:6.1f} tok/s  "
                        f"accepted {r['accepted']:5d}/{r['drafted']:5d}  {r['tokens_per_step']:.2f} tokens/step",
                        flush=True,
                    )
            finally:
                server.stop()
            load.append(os.getloadavg()[0])
    ratios = {}
    for workload in WORKLOADS:
        for k in map(str, args.clients):
            spec = runs["helios-spec"][workload][k]["tokens_per_s"]
            best_llama = max(runs[f"llama-{t}"][workload][k]["tokens_per_s"] for t in SPEC_TYPES)
            ratios[f"{workload}/{k}"] = {
                "helios_spec_over_plain": spec / runs["helios-plain"][workload][k]["tokens_per_s"],
                "helios_spec_over_best_llama_spec": spec / best_llama,
                "llama_best_spec_over_plain": best_llama / runs["llama-plain"][workload][k]["tokens_per_s"],
            }
    result = metadata(
        "bench_speculative",
        model=model.name,
        threads=args.threads,
        clients=args.clients,
        max_tokens=MAX_TOKENS,
        sampled=SAMPLED,
        engines={name: [kind, *extra] for name, (kind, extra) in table.items()},
        runs=runs,
        ratios=ratios,
    )
    result["machine"] |= {"load_average_1min": load, "load_average_median": statistics.median(load)}
    for key, r in ratios.items():
        print(
            f"{key:7} helios spec/plain {r['helios_spec_over_plain']:.2f}  "
            f"spec/llama best spec {r['helios_spec_over_best_llama_spec']:.2f}  "
            f"(llama spec/plain {r['llama_best_spec_over_plain']:.2f})"
        )
    write_result(result, plot)


if __name__ == "__main__":
    main()
