"""helios-engine serve --rpc against llama-server --rpc: the same two workers, model, threads and prompts.

Two `helios-engine rpc-worker`s on loopback (WORKER_THREADS threads each) hold
the whole model (-ngl 99). Each server in turn connects to them (a worker
serves one client at a time) and serves K = 1 and 4 streaming clients; then
both run locally with the same thread count as one worker, for the cost of the
transport. Aggregate generated tokens/s, as in bench_server.

Run:  .venv/bin/python benchmarks/bench_rpc.py [--clients 1 4] [--worker-threads 1] [--max-tokens 64]
Writes benchmarks/results/bench_rpc-<timestamp>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bench_server import load, start
from harness import RpcWorkers, figure, metadata, write_result

from helios_core import default_model_path

KINDS = ("llama-server", "helios")


def measure(kinds, clients, args, model, extra=()) -> dict[str, dict[str, dict]]:
    runs: dict[str, dict[str, dict]] = {kind: {} for kind in kinds}
    for kind in kinds:
        for k in clients:
            server = start(kind, k, args.worker_threads, model, extra)
            try:
                runs[kind][str(k)] = asyncio.run(load(server.url, k, args.rounds, args.max_tokens))
            finally:
                server.stop()
            r = runs[kind][str(k)]
            where = "rpc" if extra else "local"
            print(
                f"{where:5} K={k} {kind:13} aggregate {r['aggregate_tokens_per_s']:6.1f} tok/s  "
                f"TTFT p50 {r['ttft_p50_s']:.2f}s",
                flush=True,
            )
    return runs


def plot(result: dict, path: Path) -> None:
    ks = result["clients"]
    title = f"{result['model']}: 2 loopback RPC workers x {result['worker_threads']} thread(s) vs local"
    with figure(path, title) as (ax,):
        for kind, style in (("helios", "o-"), ("llama-server", "s--")):
            for where, alpha in (("rpc", 1.0), ("local", 0.35)):
                values = [result[where][kind][str(k)]["aggregate_tokens_per_s"] for k in ks]
                ax.plot(ks, values, style, alpha=alpha, label=f"{kind} {'--rpc' if where == 'rpc' else where}")
        ax.set_title("aggregate generated tok/s")
        ax.set_xlabel("concurrent streaming clients (= slots)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2, help="completions each client streams")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=1,
        help="threads of each worker, and of each server (the local runs compute with these)",
    )
    args = parser.parse_args()
    model = default_model_path()

    workers = RpcWorkers(2, threads=args.worker_threads)
    try:
        rpc = measure(KINDS, args.clients, args, model, ("--rpc", workers.spec, "-ngl", "99"))
    finally:
        workers.stop()
    local = measure(KINDS, args.clients, args, model)

    def ratio(runs, k):
        return runs["helios"][k]["aggregate_tokens_per_s"] / runs["llama-server"][k]["aggregate_tokens_per_s"]

    result = metadata(
        "bench_rpc",
        model=model.name,
        worker_threads=args.worker_threads,
        max_tokens=args.max_tokens,
        rounds=args.rounds,
        clients=args.clients,
        rpc=rpc,
        local=local,
        helios_over_llama_server_rpc={k: ratio(rpc, k) for k in rpc["helios"]},
        helios_over_llama_server_local={k: ratio(local, k) for k in local["helios"]},
        rpc_over_local={
            kind: {
                k: rpc[kind][k]["aggregate_tokens_per_s"] / local[kind][k]["aggregate_tokens_per_s"] for k in rpc[kind]
            }
            for kind in KINDS
        },
        targets={"helios_over_llama_server_rpc": 1.0},
    )
    write_result(result, plot)

    print(f"\n{'K':>3} {'helios rpc':>11} {'llama rpc':>10} {'ratio':>6} {'helios local':>13} {'llama local':>12}")
    for k in map(str, args.clients):
        print(
            f"{k:>3} {rpc['helios'][k]['aggregate_tokens_per_s']:>11.1f} "
            f"{rpc['llama-server'][k]['aggregate_tokens_per_s']:>10.1f} {ratio(rpc, k):>6.3f} "
            f"{local['helios'][k]['aggregate_tokens_per_s']:>13.1f} "
            f"{local['llama-server'][k]['aggregate_tokens_per_s']:>12.1f}"
        )


if __name__ == "__main__":
    main()
