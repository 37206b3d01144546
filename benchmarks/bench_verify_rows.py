"""What a speculative verify chunk costs: one decode of 1 + k tokens of one sequence, against one token.

No Python loop, no server: llama.cpp's own decode time (median of --repeats)
for a chunk of 1 + k tokens after a 300-token history, with logits for every
row (what verification needs) and for the last row only (what a prompt chunk
needs), as a multiple of one plain decode step. The difference between the
two is the output head: on Gemma's 262,144-token vocabulary it is most of the
model's multiply-adds, and a verify chunk pays it for every row.

From these numbers the best speed-up speculation can give follows: with a
per-token acceptance a and a chunk cost C(k) in plain steps, a step yields
(1 - a^(k+1)) / (1 - a) tokens for C(k), so the speed-up is at most that
ratio at the best k; it is printed for a few values of a.

Run:  .venv/bin/python benchmarks/bench_verify_rows.py [--threads 2]
Writes benchmarks/results/bench_verify_rows-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from harness import metadata, write_result

from helios_core import Batch, Context, Model, backend, default_model_path

HISTORY = 300
ACCEPTANCE = (0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def chunk_ms(ctx: Context, batch: Batch, k: int, all_rows: bool, repeats: int) -> float:
    """Median wall ms of decoding 1 + k tokens at HISTORY, then removing them again."""
    times = []
    tokens = np.arange(1000, 1001 + k, dtype=np.int32)
    for _ in range(repeats):
        batch.clear()
        rows = batch.add(tokens, HISTORY, 0, logits_last=True)
        if all_rows:
            batch.logits[rows] = 1
        started = time.perf_counter()
        ctx.decode(batch)
        ctx.logits(rows.stop - 1)
        times.append(time.perf_counter() - started)
        ctx.seq_rm(0, HISTORY, -1)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--drafts", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with Model(default_model_path()) as model, Context(model, n_ctx=1024, n_threads=args.threads) as ctx:
        batch = Batch(512)
        history = [model.vocab.bos] + [100 + i % 50 for i in range(HISTORY - 1)]
        batch.set(history, 0, 0)
        ctx.decode(batch)
        chunk_ms(ctx, batch, 0, False, 3)  # warm up
        one = chunk_ms(ctx, batch, 0, False, args.repeats)
        rows = {}
        for k in args.drafts:
            every = chunk_ms(ctx, batch, k, True, args.repeats)
            last = chunk_ms(ctx, batch, k, False, args.repeats)
            rows[k] = {
                "all_rows_ms": every,
                "last_row_ms": last,
                "all_rows_steps": every / one,
                "last_row_steps": last / one,
            }
            print(
                f"1+{k:2d} tokens: logits for every row {every:6.1f} ms = {every / one:5.2f} steps, "
                f"last row only {last:6.1f} ms = {last / one:5.2f} steps",
                flush=True,
            )
    ceilings = {}
    for a in ACCEPTANCE:
        gains = {k: (1 - a ** (k + 1)) / (1 - a) / r["all_rows_steps"] for k, r in rows.items()}
        best = max(gains, key=gains.get)
        ceilings[str(a)] = {"best_k": best, "speedup": gains[best]}
        print(f"acceptance {a:.2f}: at most {gains[best]:.2f}x plain decoding, at k = {best}")
    result = metadata(
        "bench_verify_rows",
        model=default_model_path().name,
        threads=args.threads,
        history=HISTORY,
        one_token_ms=one,
        chunks=rows,
        speedup_ceiling=ceilings,
    )
    result["machine"]["devices"] = [d.description for d in backend.devices()]
    write_result(result)


if __name__ == "__main__":
    main()
