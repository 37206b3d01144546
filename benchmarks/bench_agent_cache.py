"""An agent trace against helios (prompt cache tier on and off) and llama-server (--cache-ram default and 0).

Agent clients resend one long prefix (system prompt and tool definitions) with
a growing conversation, and more conversations take turns than there are
slots. The trace: CONVERSATIONS conversations share a PREFIX_TOKENS-token
prefix; each adds a question and a short greedy answer per turn, TURNS turns
each. Turns are issued round by round (turn 1 of every conversation, then
turn 2, ...), at most --parallel at once, over a server with --parallel slots,
so with 12 conversations and 4 slots a conversation's slot has nearly always
been taken by another when it returns.

Reported per server: time to first token p50/p95 of cold turns (a
conversation's first) and returning turns (the others), total wall time, and
prompt tokens decoded (timings.prompt_n of each answer: what no cache served);
then ratios measured in the same run: returning / cold TTFT, helios / llama-server.

Run:  .venv/bin/python benchmarks/bench_agent_cache.py                    (the issue's trace: 12 x 5 over 3,000)
      .venv/bin/python benchmarks/bench_agent_cache.py --conversations 3 --turns 2 --prefix-tokens 300 --parallel 2
Needs `make tools` for llama-server (or --servers helios-on helios-off).
Writes benchmarks/results/bench_agent_cache-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from harness import http_client, metadata, start_server, stream_completion, write_result

from helios_core import default_model_path
from helios_core.model import Model

SERVERS = ("helios-on", "helios-off", "llama-server", "llama-server-no-cache")
TOOL = (
    '{{"type": "function", "function": {{"name": "tool_{i}", "description": "Look up record {i} in the '
    'catalogue and return its fields as JSON.", "parameters": {{"type": "object", "properties": {{"id": '
    '{{"type": "string"}}, "fields": {{"type": "array", "items": {{"type": "string"}}}}}}}}}}}}\n'
)
SYSTEM = "You are a coding agent working in a repository. Call a tool when you need data. Tools:\n"
TOPICS = ("the build", "a failing test", "the README", "a slow query", "the parser", "an API route")


def shared_prefix(vocab, n_tokens: int) -> str:
    """The system prompt and as many tool definitions as make about `n_tokens` tokens."""
    text, i = SYSTEM, 0
    while len(vocab.tokenize(text)) < n_tokens:
        text += TOOL.format(i=i)
        i += 1
    return text


def question(conversation: int, turn: int) -> str:
    topic = TOPICS[(conversation + turn) % len(TOPICS)]
    return f"\nUser (session {conversation}, step {turn}): look at {topic} and say what to change.\nAssistant:"


def start(name: str, args: argparse.Namespace):
    """One of SERVERS, with --parallel slots of --ctx-size tokens; the -off/-no-cache ones with --cache-ram 0."""
    kind = "helios" if name.startswith("helios") else "llama-server"
    cache = ("--cache-ram", "0") if name in ("helios-off", "llama-server-no-cache") else ()
    return start_server(kind, args.model, args.threads, parallel=args.parallel, ctx_per_slot=args.ctx_size, extra=cache)


async def turn(client, url: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy completion: its text, time to first token, and prompt tokens decoded."""
    streamed = await stream_completion(client, url, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0})
    decoded = (streamed["timings"] or {}).get("prompt_n")
    if decoded is None and (usage := streamed["usage"]):
        decoded = usage["prompt_tokens"] - (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"text": streamed["text"], "ttft": streamed["ttft"], "decoded": decoded or 0}


async def trace(url: str, prefix: str, args: argparse.Namespace) -> dict:
    """Run the trace once; every turn's record, and the wall time."""
    histories = [prefix] * args.conversations
    records: list[dict] = []
    slots = asyncio.Semaphore(args.parallel)
    async with http_client() as client:
        await turn(client, url, "Warm up.", 2)
        started = time.perf_counter()
        for t in range(args.turns):  # a round: every conversation's turn t, at most --parallel at once

            async def one(c: int, t: int = t) -> None:
                async with slots:
                    prompt = histories[c] + question(c, t)
                    result = await turn(client, url, prompt, args.answer_tokens)
                histories[c] = prompt + result["text"]
                records.append({"conversation": c, "turn": t, "ttft": result["ttft"], "decoded": result["decoded"]})

            await asyncio.gather(*(one(c) for c in range(args.conversations)))
        wall = time.perf_counter() - started
    return {"records": records, "wall_s": wall}


def summarise(run: dict) -> dict:
    cold = sorted(r["ttft"] for r in run["records"] if r["turn"] == 0)
    returning = sorted(r["ttft"] for r in run["records"] if r["turn"] > 0)
    return {
        "cold_ttft_p50_s": _quantile(cold, 0.5),
        "cold_ttft_p95_s": _quantile(cold, 0.95),
        "returning_ttft_p50_s": _quantile(returning, 0.5),
        "returning_ttft_p95_s": _quantile(returning, 0.95),
        "wall_s": run["wall_s"],
        "prompt_tokens_decoded": sum(r["decoded"] for r in run["records"]),
        "turns": len(run["records"]),
    }


def ratios(summaries: dict) -> dict:
    """The issue's targets, as ratios of figures from this one run."""
    out = {}
    for name, s in summaries.items():
        if s["cold_ttft_p50_s"]:
            out[f"{name}: returning / cold TTFT p50 (target <= 0.10 for helios-on)"] = (
                s["returning_ttft_p50_s"] / s["cold_ttft_p50_s"]
            )
    if "helios-on" in summaries and "llama-server" in summaries:
        on, peer = summaries["helios-on"], summaries["llama-server"]
        out["helios-on / llama-server returning TTFT p50 (target <= 1.0)"] = (
            on["returning_ttft_p50_s"] / peer["returning_ttft_p50_s"]
        )
        out["helios-on / llama-server wall time (target <= 0.9)"] = on["wall_s"] / peer["wall_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--prefix-tokens", type=int, default=3000, help="the shared system-and-tools prefix")
    parser.add_argument("--answer-tokens", type=int, default=16, help="max_tokens of each (greedy) answer")
    parser.add_argument("--parallel", type=int, default=4, help="slots of each server, and requests in flight")
    parser.add_argument("--ctx-size", type=int, default=0, help="tokens per slot (default: what the trace needs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    args = parser.parse_args()
    with Model(args.model, vocab_only=True) as model:
        prefix = shared_prefix(model.vocab, args.prefix_tokens)
    if not args.ctx_size:  # prefix + turns x (question ~30 + answer), with room to spare
        args.ctx_size = 256 * (1 + (args.prefix_tokens + args.turns * (48 + args.answer_tokens) + 256) // 256)

    summaries = {}
    for name in args.servers:
        server = start(name, args)
        try:
            summaries[name] = summarise(asyncio.run(trace(server.url, prefix, args)))
        finally:
            server.stop()
        print(name, json.dumps(summaries[name], indent=2), flush=True)
    result = metadata(
        "bench_agent_cache",
        trace={k: v for k, v in vars(args).items() if k not in ("model", "servers")},
        model=args.model.name,
        summaries=summaries,
        ratios=ratios(summaries),
    )
    for label, value in result["ratios"].items():
        print(f"{label}: {value:.3f}")
    write_result(result)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return statistics.median(values) if q == 0.5 else values[min(len(values) - 1, round(q * (len(values) - 1)))]


if __name__ == "__main__":
    main()
