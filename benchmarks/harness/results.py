"""What a benchmark writes: one JSON file (and a plot) per run in benchmarks/results/, metadata first."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def metadata(benchmark: str, **fields) -> dict:
    """The block every result starts with: which benchmark, when, on which commit and machine, then `fields`.

    `machine` holds the CPU count, the platform, llama.cpp's system info (its instruction sets:
    what tells this project's machines apart) and the 1-minute load average at this call; a
    benchmark adds its own load readings to it where it takes more.
    """
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "benchmark": benchmark,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit.stdout.strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "llama": _system_info(),
            "load_average_1min": os.getloadavg()[0],
        },
        **fields,
    }


def write_result(result: dict, plot: Callable[[dict, Path], None] | None = None) -> Path:
    """benchmarks/results/<benchmark>-<timestamp>.json (and .png through `plot`); returns the path without suffix."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{result['benchmark']}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    if plot:
        plot(result, stem.with_suffix(".png"))
    print(f"wrote {stem.relative_to(ROOT)}.json" + (" and .png" if plot else ""))
    return stem


def summary(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation (0 for one value) and every value of a measurement repeated in rounds."""
    return {
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def _system_info() -> str:
    from helios_core import backend

    return backend.system_info()
