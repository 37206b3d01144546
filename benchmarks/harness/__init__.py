"""What every benchmark shares: servers to measure, streams to read, results to write, plots.

- servers:  `start_server` (helios-engine serve or llama-server, same model and threads, on a free
            loopback port, healthy once returned), `tool` (llama.cpp's binaries from the same build),
            `RpcWorkers`, `free_port`, `wait_healthy`, `stop_process`;
- streams:  `http_client`, `sse_events` (one Server-Sent Events parser), `stream_completion`;
- results:  `metadata` (the block every result file starts with), `write_result`, `summary`;
- plots:    `figure`;
- shapes:   `ask`, `report`, `compare`, `shape`, `differences`, `event_sequence`: one protocol
            comparison of two servers' answers to the same bodies;
- adapters: `write_adapter` (a seeded random LoRA GGUF).
- media, mmproj: test media made here (PNGs, the tree's own files) and a tiny random
            projector GGUF (`write_mmproj`), for bench_media and the media tests.

Benchmarks run as scripts (`python benchmarks/bench_x.py`), so `benchmarks/` is on sys.path and
this package imports as `harness`; tests import it as `benchmarks.harness`. Benchmarks import no
test module: what they shared with the tests lives here, and the tests import it from here.
"""

from .adapters import write_adapter
from .plots import figure
from .results import RESULTS, ROOT, metadata, summary, write_result
from .servers import RpcWorkers, Server, free_port, start_server, stop_process, tool, wait_healthy
from .shapes import ask, compare, differences, event_sequence, report, shape
from .streams import http_client, sse_events, stream_completion

__all__ = [
    "RESULTS",
    "ROOT",
    "RpcWorkers",
    "Server",
    "ask",
    "compare",
    "differences",
    "event_sequence",
    "figure",
    "free_port",
    "http_client",
    "metadata",
    "report",
    "shape",
    "sse_events",
    "start_server",
    "stop_process",
    "stream_completion",
    "summary",
    "tool",
    "wait_healthy",
    "write_adapter",
    "write_result",
]
