"""The results tables of docs/benchmarks.md and the README, written from benchmarks/results/.

A table sits in a doc between `<!-- results:NAME -->` and `<!-- /results:NAME -->`, and NAME is a
key of TABLES: a function of the results folder that returns the table's Markdown, from the
newest run of its benchmark (or from every run, for the history tables). The prose around the
markers is the doc's own; only what lies between them is written here, so a new run shows up
in the docs by running this script, never by copying numbers by hand.

Run:  .venv/bin/python benchmarks/results_tables.py           rewrite the tables in place
      .venv/bin/python benchmarks/results_tables.py --check   exit 1 if a doc is not current
(tests/test_results_tables.py runs the check.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def runs(benchmark: str, results: Path = RESULTS) -> list[tuple[str, dict]]:
    """(file name, parsed JSON) of every run of `benchmark`, oldest first (names sort by their timestamp)."""
    return [(path.name, json.loads(path.read_text())) for path in sorted(results.glob(f"{benchmark}-*.json"))]


class NoRun(LookupError):
    """A table's benchmark has no result file yet (the table then says so)."""


def newest(benchmark: str, results: Path = RESULTS) -> tuple[str, dict]:
    found = runs(benchmark, results)
    if not found:
        raise NoRun(benchmark)
    return found[-1]


def render(text: str, results: Path = RESULTS) -> str:
    """`text` with every marked table rewritten from `results`; an unknown NAME is a KeyError."""

    def table(match: re.Match) -> str:
        name = match.group(1)
        try:
            body = TABLES[name](results).rstrip()
        except NoRun as missing:
            body = f"_No run of {missing} in benchmarks/results/ yet._"
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    return _MARKED.sub(table, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a doc is not current")
    args = parser.parse_args()
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(doc.relative_to(ROOT))
            if not args.check:
                doc.write_text(fresh)
    verb = "not current" if args.check else "rewrote"
    for doc in stale:
        print(f"{verb}: {doc}")
    if args.check and stale:
        sys.exit(f"run .venv/bin/python {Path(__file__).relative_to(ROOT)} to bring them up to date")


# --- the tables ------------------------------------------------------------------------------------


def _generate(results: Path) -> str:
    name, run = newest("bench_generate", results)
    tps, ratios, targets = run["tokens_per_s"], run["ratios"], run["targets"]
    us, warm = run["python_overhead_us_per_token"], run.get("python_us_per_token_warm")
    share = (
        f"Python's share per token (wall time minus llama.cpp's compute time): "
        f"{us['greedy']['mean']:.0f} us greedy, {us['sampled']['mean']:.0f} us sampled."
    )
    if warm:  # runs before it was measured lack it
        share += (
            f" With warm caches (llama_decode a no-op, as when the weights live on a GPU): "
            f"{warm['greedy']['mean']:.0f} us greedy, {warm['sampled']['mean']:.0f} us sampled."
        )
    rows = [
        ("greedy decode tok/s", "greedy", "tg128", "greedy_vs_tg128"),
        ("sampled decode tok/s (T 0.8, top-p 0.95)", "sampled", "tg128", "sampled_vs_tg128"),
        ("prompt tok/s, 512 tokens", "prompt", "pp512", "prompt_vs_pp512"),
    ]
    return _page(
        f"`{name}`: {_rounds(tps['greedy'])} rounds, {run['threads']} threads, {_cpu(run)}",
        ["", "helios", "llama-bench", "ratio", "target"],
        [
            [
                label,
                f"{tps[ours]['mean']:.1f}",
                f"{tps[peer]['mean']:.1f} ({peer})",
                f"{ratios[r]:.3f}",
                f"{targets[r]:.2f}",
            ]
            for label, ours, peer, r in rows
        ],
        share,
    )


def _generate_history(results: Path) -> str:
    rows = []
    for name, run in runs("bench_generate", results):
        r, us, tps = run["ratios"], run["python_overhead_us_per_token"], run["tokens_per_s"]
        rows.append(
            [f"`{name}`", _rounds(tps["greedy"]), _cpu(run), f"{tps['greedy']['mean']:.1f}, {tps['tg128']['mean']:.1f}"]
            + [f"{r[key]:.3f}" for key in ("greedy_vs_tg128", "sampled_vs_tg128", "prompt_vs_pp512")]
            + [f"{us['greedy']['mean']:.0f}, {us['sampled']['mean']:.0f}"]
        )
    columns = ["run", "rounds", "CPU", "greedy tok/s, tg128", "greedy / tg128", "sampled / tg128", "prompt / pp512"]
    return _page("", [*columns, "Python us/token greedy, sampled"], rows)


def _server(results: Path) -> str:
    name, run = newest("bench_server", results)
    helios, peer, hit = run["runs"]["helios"], run["runs"]["llama-server"], run["cache_hit"]
    rows = [
        [k]
        + [f"{side[k]['aggregate_tokens_per_s']:.1f}" for side in (helios, peer)]
        + [f"{run['helios_over_llama_server'][k]:.2f}"]
        + [f"{side[k]['ttft_p50_s']:.2f} / {side[k]['ttft_p95_s']:.2f} s" for side in (helios, peer)]
        for k in helios
    ]
    after = (
        f"Time to first token with a 1,000-token shared system prompt: {hit['helios']['cold_ttft_s']:.2f} s cold, "
        f"{hit['helios']['hit_ttft_s']:.3f} s on a cache hit ({100 * hit['helios']['hit_over_cold']:.1f}% of cold; "
        f"llama-server {100 * hit['llama-server']['hit_over_cold']:.1f}%)."
    )
    if scaling := run["scaling"]:
        after += (
            f"\nScaling: helios at K = 4 is {scaling['helios_k4_over_k1']:.2f}x helios at K = 1 "
            f"(llama-server: {scaling['llama_server_k4_over_k1']:.2f}x)."
        )
    return _page(
        f"`{name}`: {run['rounds']} streamed greedy completions of {run['max_tokens']} tokens per client, "
        f"{run['threads']} threads",
        [
            "clients K",
            "helios tok/s",
            "llama-server tok/s",
            "ratio",
            "helios TTFT p50 / p95",
            "llama-server TTFT p50 / p95",
        ],
        rows,
        after,
    )


def _headline(results: Path) -> str:
    """The README's: the token loop against llama-bench, the server against llama-server."""
    gen_name, gen = newest("bench_generate", results)
    srv_name, srv = newest("bench_server", results)
    ratios = gen["ratios"]
    rows = [
        ["greedy decode, token loop / llama-bench tg128", f"{ratios['greedy_vs_tg128']:.3f}"],
        ["sampled decode (T 0.8, top-p 0.95) / llama-bench tg128", f"{ratios['sampled_vs_tg128']:.3f}"],
        ["prompt, 512 tokens / llama-bench pp512", f"{ratios['prompt_vs_pp512']:.3f}"],
    ] + [
        [f"`helios-engine serve` / llama-server, {k} streaming client{'s' * (k != '1')}", f"{ratio:.2f}"]
        for k, ratio in srv["helios_over_llama_server"].items()
    ]
    return _page(
        "",
        ["helios against llama.cpp's own tools, same build, model and threads", "ratio"],
        rows,
        f"(`{gen_name}`: {gen['threads']} threads, {_cpu(gen)}; `{srv_name}`: {srv['threads']} threads, {_cpu(srv)})",
    )


def _score(results: Path) -> str:
    rows = [
        [f"`{name}`", s["settings"]["rounds"], f"{s['helios_scored_tok_s']:.1f}"]
        + [f"{s['llama_perplexity_scored_tok_s']:.1f}", f"{s['ratio']:.3f}"]
        + [f"{s['helios_ppl']:.4f} / {s['llama_perplexity_ppl']:.4f}"]
        for name, s in ((name, run["summary"]) for name, run in runs("bench_score", results))
    ]
    columns = ["run", "rounds", "helios tok/s", "llama-perplexity tok/s", "ratio", "perplexity helios / llama"]
    return _page("", columns, rows)


def _constrained(results: Path) -> str:
    name, run = newest("bench_constrained", results)
    batched = run["batched"]
    parts = (("one sequence", run), (f"{batched['sequences']} sequences in one decode (aggregate)", batched))
    return _page(
        f"`{name}`: {len(run['tokens_per_s']['constrained']['runs'])} rounds, {run['threads']} threads, "
        f"target {run['target']}, {_load(run['machine']['load_average_1m'])}",
        ["", "unconstrained tok/s", "constrained tok/s", "ratio", "median of rounds"],
        [
            [label, f"{part['tokens_per_s']['unconstrained']['mean']:.1f}"]
            + [f"{part['tokens_per_s']['constrained']['mean']:.1f}", f"{part['ratio']:.3f}"]
            + [f"{part['ratio_per_round']['median']:.3f}"]
            for label, part in parts
        ],
    )


def _rpc(results: Path) -> str:
    name, run = newest("bench_rpc", results)
    rpc, local = run["rpc"], run["local"]
    rows = [
        [k]
        + [f"{rpc[kind][k]['aggregate_tokens_per_s']:.1f}" for kind in ("helios", "llama-server")]
        + [f"{run['helios_over_llama_server_rpc'][k]:.2f}"]
        + [f"{local[kind][k]['aggregate_tokens_per_s']:.1f}" for kind in ("helios", "llama-server")]
        for k in rpc["helios"]
    ]
    over = run["rpc_over_local"]["helios"]
    return _page(
        f"`{name}`: {run['rounds']} rounds, 2 loopback workers x {run['worker_threads']} thread(s)",
        ["K", "helios --rpc", "llama-server --rpc", "ratio", "helios local", "llama-server local"],
        rows,
        "helios --rpc over helios local: " + ", ".join(f"{v:.2f} at K={k}" for k, v in over.items()) + ".",
    )


def _samplers(results: Path) -> str:
    name, run = newest("bench_samplers", results)
    return _page(
        f"`{name}`: {run['rounds']} rounds of {run['tokens']} tokens, {run['threads']} threads, "
        f"target {run['target']}, {_load(run['machine'].get('load_average') or run['machine']['load_average_1min'])}",
        ["chain", "tok/s ratio", "median-step ratio"],
        [[chain, f"{m['ratio']:.3f}", f"{m['ratio_of_median_steps']:.3f}"] for chain, m in run["median"].items()],
    )


def _lora(results: Path) -> str:
    name, run = newest("bench_lora", results)
    tps = run["tokens_per_s"]
    labels = {"base": "no adapter", "one set": "all on one adapter", "two sets": "half on one adapter, half on another"}
    rows = [[label, f"{tps['helios'][c]:.1f}", f"{tps['llama-server'][c]:.1f}"] for c, label in labels.items()]
    two_over_one = [f"**{tps[kind]['two sets'] / tps[kind]['one set']:.2f}**" for kind in ("helios", "llama-server")]
    return _page(
        f"`{name}`: {run['clients']} streaming clients, {run['max_tokens']} tokens each, medians of "
        f"{run['rounds']}, {run['threads']} threads, {_load(run['load_average'])}",
        ["configuration", "helios tok/s", "llama-server tok/s"],
        [*rows, ["**two sets / one set**", *two_over_one]],
    )


def _speculative(results: Path) -> str:
    name, run = newest("bench_speculative", results)
    drafters = ", ".join(
        f"`{e[len('llama-') :]}`" for e in run["engines"] if e.startswith("llama-") and e != "llama-plain"
    )
    rows = []
    for key, r in run["ratios"].items():
        workload, clients = key.split("/")
        spec = run["runs"]["helios-spec"][workload][clients]
        rows.append(
            [f"{workload}, {clients}"]
            + [f"{r[k]:.2f}" for k in ("helios_spec_over_plain", "helios_spec_over_best_llama_spec")]
            + [f"{r['llama_best_spec_over_plain']:.2f}"]
            + [f"{spec['tokens_per_step']:.2f}, {spec['accepted']}/{spec['drafted']}"]
        )
    columns = ["workload, clients", "helios spec / helios plain", f"helios spec / llama-server's best ({drafters})"]
    return _page(
        f"`{name}`: {run['threads']} threads, load average median {run['machine']['load_average_median']:.1f}",
        [*columns, "llama-server best spec / plain", "helios tokens per step, kept/drafted"],
        rows,
    )


def _embed(results: Path) -> str:
    name, run = newest("bench_embed", results)
    tps = run["tokens_per_s"]
    return _page(
        f"`{name}`: {run['texts']} texts ({run['tokens']['helios']} tokens), {run['clients']} clients in the "
        f"concurrent mode, {run['threads']} threads",
        ["mode", "helios tokens/s", "llama-server tokens/s", "ratio", "median of rounds"],
        [
            [mode, f"{tps['helios'][mode]['mean']:.1f}", f"{tps['llama-server'][mode]['mean']:.1f}"]
            + [f"{ratio:.3f}", f"{run['ratio_per_round'][mode]['median']:.3f}"]
            for mode, ratio in run["ratios"].items()
        ],
    )


def _verify_rows(results: Path) -> str:
    name, run = newest("bench_verify_rows", results)
    return _page(
        f"`{name}`: one verify chunk of 1 + k rows, in plain steps ({run['one_token_ms']:.1f} ms), "
        f"{run['threads']} threads",
        ["k", "all rows' logits, steps", "the last row's only, steps"],
        [[k, f"{c['all_rows_steps']:.2f}", f"{c['last_row_steps']:.2f}"] for k, c in run["chunks"].items()],
    )


def _agent_cache(results: Path) -> str:
    name, run = newest("bench_agent_cache", results)
    trace = run["trace"]
    rows = [
        [server, f"{s['cold_ttft_p50_s']:.2f} / {s['cold_ttft_p95_s']:.2f} s"]
        + [f"{s['returning_ttft_p50_s']:.2f} / {s['returning_ttft_p95_s']:.2f} s", f"{s['wall_s']:.1f} s"]
        + [s["prompt_tokens_decoded"]]
        for server, s in run["summaries"].items()
    ]
    return _page(
        f"`{name}`: {trace['conversations']} conversations x {trace['turns']} turns over a "
        f"{trace['prefix_tokens']}-token prefix, --parallel {trace['parallel']}, {trace['threads']} threads",
        ["server", "cold TTFT p50 / p95", "returning TTFT p50 / p95", "wall", "prompt tokens decoded"],
        rows,
        "\n".join(f"- {label}: {value:.3f}" for label, value in run["ratios"].items()),
    )


def _media(results: Path) -> str:
    name, run = newest("bench_media", results)
    seconds = run["median_seconds"]
    return _page(
        f"`{name}`: {run['threads']} threads, one image a request, max_tokens 1",
        ["server", "median ms per image request", "requests"],
        [[kind, f"{1000 * s:.0f}", len(run["seconds"][kind])] for kind, s in seconds.items()],
        f"llama-server / helios: {run['ratio_llama_over_helios']:.3f} (the bar: >= 0.95)",
    )


def _page(caption: str, columns: list[str], rows: list[list], after: str = "") -> str:
    """A caption line, a Markdown table (the first column left-aligned, the others right), a line after."""
    table = [
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]
    return "\n".join([*([caption, ""] if caption else []), *table, *(["", after] if after else [])])


def _rounds(summary: dict) -> int:
    return len(summary["runs"])


def _cpu(run: dict) -> str:
    """The instruction set that tells this project's machines apart, from llama.cpp's system info."""
    info = run.get("machine", {}).get("llama", "")
    return "AVX-512" if "AVX512 = 1" in info else "AVX2" if "AVX2 = 1" in info else "CPU not recorded"


def _load(value) -> str:
    """A recorded load average: one figure, a list of them, or before and after."""
    if isinstance(value, dict):
        before, after = (v[0] if isinstance(v, list) else v for v in (value["before"], value["after"]))
        return f"load average {before:.1f} before, {after:.1f} after"
    return f"load average {(value[0] if isinstance(value, list) else value):.1f}"


TABLES: dict[str, Callable[[Path], str]] = {
    "headline": _headline,
    "generate": _generate,
    "generate-history": _generate_history,
    "server": _server,
    "score": _score,
    "constrained": _constrained,
    "rpc": _rpc,
    "samplers": _samplers,
    "lora": _lora,
    "speculative": _speculative,
    "embed": _embed,
    "verify-rows": _verify_rows,
    "agent-cache": _agent_cache,
    "media": _media,
}
_MARKED = re.compile(r"<!-- results:([\w-]+) -->\n.*?<!-- /results:\1 -->", re.S)

if __name__ == "__main__":
    main()
