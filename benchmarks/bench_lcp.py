"""helios against llama-cpp-python 0.3.36, same model, prompt, settings and threads, in alternating rounds.

llama-cpp-python is built from its sdist (the one vendor/fetch.py caches under
~/.cache/helios/downloads) into a throwaway venv, with the CMake flags helios's own
libraries were built with (vendor/build.py: BASE_CMAKE_ARGS, then CMAKE_ARGS).
That build is ~15 minutes of CPU on 2 cores; it is kept under
~/.cache/helios/bench-lcp/<flags hash> and reused until the flags change. With
GGML_BACKEND_DL its CPU backend is a set of loadable variants: the worker loads
the one helios itself runs on this machine (helios_core/cpu_variant.py), so both
sides run the same kernels from the same source.

Each round decodes N_GEN tokens greedy and sampled (temperature 0.8, top-p 0.95:
llama-cpp-python's own top_k=40 and min_p=0.05 defaults turned off so both run the
same chain) with helios in this process, then with llama-cpp-python in a worker
process, streaming, and times from the first token to the last (the prompt excluded).

Run:  .venv/bin/python benchmarks/bench_lcp.py [--rounds 3] [--threads 2] [--model SPEC]
Writes benchmarks/results/bench_lcp-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "vendor"))

import build as vendor_build  # noqa: E402
import fetch as vendor_fetch  # noqa: E402

from helios_core import GenerationParams, Generator, Model, backend, resolve_model  # noqa: E402
from helios_core.context import Context  # noqa: E402

LCP_VERSION = vendor_fetch.SDIST_VERSION  # the sdist helios vendors llama.cpp from: the same tree
N_GEN = 128
PROMPT = "The three primary colors are"
CHAINS = {
    "greedy": {"temperature": 0.0},
    "sampled": {"temperature": 0.8, "top_p": 0.95},
}
TARGETS = {"greedy": 1.0, "sampled": 1.25}

# The worker, run by the throwaway venv's Python: one JSON command a line in, one result a line out.
_WORKER = r"""
import ctypes, json, sys, time
from pathlib import Path
import llama_cpp
setup = json.loads(sys.argv[1])
# Built with GGML_BACKEND_DL, ggml registers no backend by itself, and pip installs the variants
# into site-packages/bin, not beside libllama. Register them through the libggml that libllama
# itself loaded: by soname, since llama_cpp/lib holds libggml.so and libggml.so.0 as two copied
# files, and a CDLL of the first by path is a second libggml with a registry of its own.
ggml = ctypes.CDLL("libggml.so.0", mode=ctypes.RTLD_GLOBAL)
ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
ggml.ggml_backend_load.restype = ctypes.c_void_p
if ggml.ggml_backend_dev_count() == 0:
    site = Path(llama_cpp.__file__).parent.parent
    for path in sorted(site.glob("bin/libggml-*.so")):
        # Of the CPU variants only the one helios runs here (cpu_variant.py proved it): same kernels.
        if path.name.startswith("libggml-cpu-") and path.name != f"libggml-cpu-{setup['cpu_variant']}.so":
            continue
        if not ggml.ggml_backend_load(str(path).encode()):
            sys.exit(f"ggml could not load {path}")
llm = llama_cpp.Llama(setup["model"], n_ctx=setup["n_ctx"], n_batch=512, n_threads=setup["threads"],
                      n_threads_batch=setup["threads"], verbose=False)
print(json.dumps({"ready": llama_cpp.__version__}), flush=True)
for line in sys.stdin:
    chain = json.loads(line)
    first = last = None
    count = 0
    for _ in llm.create_completion(setup["prompt"], max_tokens=setup["n_gen"], stream=True, seed=0,
                                   top_k=0, min_p=0.0, repeat_penalty=1.0, **chain):
        last = time.perf_counter()
        first = first or last
        count += 1
    print(json.dumps({"tokens": count, "tokens_per_s": (count - 1) / (last - first)}), flush=True)
"""


def lcp_python(flags: list[str]) -> Path:
    """The throwaway venv's Python with llama-cpp-python built from the cached sdist under `flags`."""
    key = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]
    venv = vendor_fetch.cache_root() / "bench-lcp" / key
    python = venv / "bin" / "python"
    marker = venv / ".built"
    if marker.exists():
        return python
    sdist = vendor_fetch.download_sdist()  # the pinned archive, checked against its sha256
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    env = dict(os.environ, CMAKE_ARGS=" ".join(flags), FORCE_CMAKE="1")
    print(f"bench_lcp: building llama-cpp-python {LCP_VERSION} into {venv} with CMAKE_ARGS={env['CMAKE_ARGS']!r}")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", str(sdist)], env=env, check=True)
    marker.write_text(" ".join(flags) + "\n")
    return python


def helios_rate(generator: Generator, params: GenerationParams) -> float:
    """tok/s from the first generated token to the last, as the worker measures llama-cpp-python."""
    generator.cache.forget(generator.ctx)
    first = last = None
    count = 0
    for _ in generator.generate(PROMPT, params):
        last = time.perf_counter()
        first = first or last
        count += 1
    return (count - 1) / (last - first)


def one_round(generator: Generator, worker: subprocess.Popen) -> dict[str, float]:
    """Each chain once with helios, then once with llama-cpp-python: tok/s by "who_chain"."""
    rates = {}
    for chain, settings in CHAINS.items():
        rates[f"helios_{chain}"] = helios_rate(generator, GenerationParams(max_tokens=N_GEN, seed=0, **settings))
        worker.stdin.write(json.dumps(settings) + "\n")
        worker.stdin.flush()
        rates[f"lcp_{chain}"] = json.loads(worker.stdout.readline())["tokens_per_s"]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    path = resolve_model(args.model)
    flags = vendor_build.cmake_args()
    python = lcp_python(flags)
    verdict = backend.cpu_verdict()
    cpu = verdict.variant if verdict is not None else None
    setup = {"model": str(path), "n_ctx": 512, "threads": args.threads, "prompt": PROMPT, "n_gen": N_GEN}
    setup["cpu_variant"] = cpu
    worker = subprocess.Popen(
        [str(python), "-c", _WORKER, json.dumps(setup)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    lcp_version = json.loads(worker.stdout.readline())["ready"]
    runs: dict[str, list[float]] = {f"{who}_{chain}": [] for who in ("helios", "lcp") for chain in CHAINS}
    try:
        with Model(path) as model:
            ctx = Context(model, n_ctx=512, n_batch=512, n_threads=args.threads)
            generator = Generator(model, ctx)
            one_round(generator, worker)  # warm-up, not counted: first graphs, page cache, CPU clocks
            for round_ in range(args.rounds):
                for key, rate in one_round(generator, worker).items():
                    runs[key].append(rate)
                print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()))
            ctx.close()
            description = model.description
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)

    mean = {k: statistics.fmean(v) for k, v in runs.items()}
    ratios = {chain: mean[f"helios_{chain}"] / mean[f"lcp_{chain}"] for chain in CHAINS}
    result = {
        "benchmark": "bench_lcp",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": description,
        "threads": args.threads,
        "llama_cpp_python": lcp_version,
        "cmake_args": flags,
        "cpu_variant": cpu,
        "tokens_per_s": runs,
        "ratios": ratios,
        "targets": TARGETS,
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"bench_lcp-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{description}, {args.threads} threads, {args.rounds} rounds, llama-cpp-python {lcp_version}")
    print(f"{'':22}{'helios':>10}{'llama-cpp-py':>14}{'ratio':>8}{'target':>8}")
    for chain in CHAINS:
        print(
            f"{chain + ' decode tok/s':22}{mean[f'helios_{chain}']:>10.1f}{mean[f'lcp_{chain}']:>14.1f}"
            f"{ratios[chain]:>8.3f}{TARGETS[chain]:>8.2f}"
        )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
