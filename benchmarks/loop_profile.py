"""Where the token loop's Python time goes, per token: work counted, not only timed.

For each chain (greedy, the default sampled chain, a top-k chain) on each path
(backend: sampled in the compute graph; python: the NumPy samplers), through the
Generator the benchmarks use:
  - Python function calls per token and C function calls per token (sys.setprofile),
  - Python's share per token: wall time minus the time inside llama_decode.
  - the same share with a stand-in decode ("cold"): after two real steps llama_decode is
    replaced by a pass that writes 96 MB, as a decode streams the weights through the
    caches, and the engine thread's CPU time outside it is counted. It reproduces the
    quiet-machine share (the loop runs cold after every decode) and, being CPU time,
    holds up far better under load than wall time does: use it to A/B a change.
Counts hold on any machine, however loaded; the shares are times, so compare them
only within one run. --pyinstrument prints a profile of one run per chain instead.

Run:  .venv/bin/python benchmarks/loop_profile.py [--tokens 128] [--rounds 3] [--pyinstrument]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from helios_core import GenerationParams, Generator, Model, _llama, resolve_model
from helios_core.context import Context

PROMPT = "The three primary colors are"
CHAINS = {
    "greedy": {"temperature": 0.0},
    "sampled": {"temperature": 0.8, "top_p": 0.95, "seed": 0},
    "top-k 40": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()

    inside = [0.0]
    decode = _llama.llama_decode

    def timed_decode(*a):
        started = time.perf_counter()
        try:
            return decode(*a)
        finally:
            inside[0] += time.perf_counter() - started

    _llama.llama_decode = timed_decode
    with Model(resolve_model(None)) as model:
        ctx = Context(model, n_ctx=1024, n_batch=512, n_threads=args.threads)
        print(f"{'chain':10}{'path':9}{'py calls/tok':>14}{'C calls/tok':>13}{'python us/tok':>15}{'cold us/tok':>13}")
        for backend in (True, False):  # True: greedy in the graph too, as on a GPU
            generator = Generator(model, ctx, backend_sampling=backend)
            for name, settings in CHAINS.items():
                params = GenerationParams(max_tokens=args.tokens, **settings)

                paths = []

                def run(params=params, generator=generator, paths=paths) -> tuple[int, float]:
                    generator.cache.forget(ctx)
                    generation = generator.generate(PROMPT, params)
                    paths.append("python" if generation.request.backend is None else "backend")
                    next(generation)  # the prompt is read and the first token drawn
                    inside[0] = 0.0
                    started = time.perf_counter()
                    n = sum(1 for _ in generation)
                    return n, time.perf_counter() - started - inside[0]

                run()  # warm-up
                if args.pyinstrument:
                    _pyinstrument(run, name, backend)
                    continue
                calls = _count_calls(run)
                shares = []
                for _ in range(args.rounds):
                    n, python = run()
                    shares.append(1e6 * python / n)
                path = paths[-1]
                cold = statistics.median(_cold_share(generator, ctx, params, timed_decode) for _ in range(args.rounds))
                print(
                    f"{name:10}{path:9}{calls[0]:>14.1f}{calls[1]:>13.1f}"
                    f"{statistics.median(shares):>15.0f}{cold:>13.0f}"
                )
        ctx.close()


_STREAM = np.ones(96 << 18, dtype=np.float32)  # 96 MB: more than any cache, about what a decode streams


def _cold_share(generator: Generator, ctx: Context, params: GenerationParams, decode) -> float:
    """The engine thread's CPU microseconds per token outside a stand-in decode that evicts the caches."""
    evicting = [0.0]

    def stand_in(*_):
        started = time.thread_time()
        _STREAM.__iadd__(1.0)
        evicting[0] += time.thread_time() - started
        return 0

    generator.cache.forget(ctx)
    generation = generator.generate(PROMPT, params)
    next(generation)
    next(generation)  # a real one-token step: its row is what every later step reads
    _llama.llama_decode = stand_in
    try:
        started = time.thread_time()
        n = sum(1 for _ in generation)
        return 1e6 * (time.thread_time() - started - evicting[0]) / max(n, 1)
    finally:
        _llama.llama_decode = decode


def _count_calls(run) -> tuple[float, float]:
    counts = {"call": 0, "c_call": 0}

    def profile(frame, event, arg):
        if event in counts:
            counts[event] += 1

    sys.setprofile(profile)
    try:
        n, _ = run()
    finally:
        sys.setprofile(None)
    return counts["call"] / n, counts["c_call"] / n


def _pyinstrument(run, name: str, backend: bool) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    run()
    profiler.stop()
    print(f"--- {name}, {'backend' if backend else 'python'} path")
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
