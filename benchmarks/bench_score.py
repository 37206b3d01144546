"""Scoring throughput: helios perplexity() against llama.cpp's llama-perplexity, same text, same run.

Both score the same file with the same n_ctx, n_batch and threads, so they
decode the same batches; the number compared is scored tokens per second
of wall time after the model is loaded (for llama-perplexity, its process
time less the moment its log says scoring starts). Rounds alternate the two.
Writes benchmarks/results/bench_score-<time>.json.

Run:  make tools && .venv/bin/python benchmarks/bench_score.py [--rounds 3] [--n-ctx 512] [--n-batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness import ROOT, metadata, tool, write_result

from helios_core import Model, default_model_path
from helios_core.scoring import perplexity


def run_llama_perplexity(binary: Path, text_file: Path, args) -> tuple[float, float, int]:
    """(perplexity, seconds after load, tokens scored) of one llama-perplexity run."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(binary),
            "-m",
            str(default_model_path()),
            "-f",
            str(text_file),
            "-c",
            str(args.n_ctx),
            "-b",
            str(args.n_batch),
            "-t",
            str(args.threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    log = result.stdout + result.stderr
    ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
    # Its log lines start with the time since it started (minutes.seconds.ms.us): scoring starts at this one.
    start = re.search(r"(\d+)\.(\d+)\.(\d+)\.(\d+) I perplexity: calculating perplexity over (\d+) chunks", log)
    minutes, seconds, ms, us, chunks = (int(g) for g in start.groups())
    loaded = 60 * minutes + seconds + ms / 1e3 + us / 1e6
    return ppl, wall - loaded, chunks * (args.n_ctx - args.n_ctx // 2 - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--n-batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--chars", type=int, default=40_000, help="characters of the vendored README to score")
    args = parser.parse_args()

    binary = tool("llama-perplexity")
    readme = (ROOT / "vendor" / "llama.cpp" / "README.md").read_text()
    text = (readme * (1 + args.chars // len(readme)))[: args.chars].rstrip("\n")
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(text)
        ours, theirs = [], []
        with Model(default_model_path()) as model:
            for round_ in range(args.rounds):
                started = time.perf_counter()
                result = perplexity(model, text, n_ctx=args.n_ctx, n_batch=args.n_batch, n_threads=args.threads)
                ours.append((result.value, time.perf_counter() - started, result.count))
                theirs.append(run_llama_perplexity(binary, text_file, args))
                print(
                    f"round {round_ + 1}: helios {ours[-1][2] / ours[-1][1]:.1f} tok/s (PPL {ours[-1][0]:.4f}), "
                    f"llama-perplexity {theirs[-1][2] / theirs[-1][1]:.1f} tok/s (PPL {theirs[-1][0]:.4f})"
                )

    ours_rate = statistics.median(count / seconds for _, seconds, count in ours)
    theirs_rate = statistics.median(count / seconds for _, seconds, count in theirs)
    summary = {
        "helios_scored_tok_s": ours_rate,
        "llama_perplexity_scored_tok_s": theirs_rate,
        "ratio": ours_rate / theirs_rate,
        "helios_ppl": ours[0][0],
        "llama_perplexity_ppl": theirs[0][0],
        "tokens_scored": ours[0][2],
        "settings": vars(args),
    }
    print(json.dumps(summary, indent=2))
    write_result(metadata("bench_score", summary=summary, helios=ours, llama_perplexity=theirs))


if __name__ == "__main__":
    main()
