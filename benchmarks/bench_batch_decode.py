"""The ceiling for batching: llama.cpp's own decode time for K sequences in one batch.

No Python loop, no server: one llama_decode of K one-token sequences
(each with a 40-token history), median of 12, for K = 1, 2, 4, 8. A
scheduler that batches K streams can at best reach the tokens/s printed
here; the K / 1 ratio is the most any server can scale on this machine.

Run:  .venv/bin/python benchmarks/bench_batch_decode.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

from helios_core import Batch, Context, Model, default_model_path

HISTORY = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    slots = max(args.sizes)
    with (
        Model(default_model_path()) as model,
        Context(model, n_ctx=1024 * slots, n_seq_max=slots, n_threads=args.threads) as ctx,
    ):
        batch = Batch(64)
        for seq in range(slots):
            batch.set([model.vocab.bos] + [100 + seq] * (HISTORY - 1), 0, seq)
            ctx.decode(batch)
        positions = [HISTORY] * slots
        rates = {}
        for k in args.sizes:
            times = []
            for _ in range(12):
                batch.clear()
                for seq in range(k):
                    batch.add([200], positions[seq], seq, logits_last=True)
                    positions[seq] += 1
                start = time.perf_counter()
                ctx.decode(batch)
                ctx.logits(0)
                times.append(time.perf_counter() - start)
            median = sorted(times)[len(times) // 2]
            rates[k] = k / median
            print(
                f"batch of {k}: {1000 * median:6.1f} ms per decode, {rates[k]:6.1f} tok/s, "
                f"{rates[k] / rates[args.sizes[0]]:.2f}x one sequence"
            )


if __name__ == "__main__":
    main()
