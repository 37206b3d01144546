"""Image encode + prefill: helios-engine serve --mmproj against llama-server --mmproj, same build, files, threads.

Both serve the default model with benchmarks/harness/mmproj.py's tiny projector (or --mmproj PATH).
Each request is a chat turn with one image (distinct images, so neither server has one
cached; the tree's test-1.jpeg among them) and max_tokens 1: its wall time is the image's
decoding, encoding and the prompt's prefill, plus one token. The servers take turns
(ROUNDS rounds, llama-server first in each), and the result is the ratio of median times,
llama-server / helios: 1.0 is parity, above it helios is faster. The issue's bar is >= 0.95.

Run:  .venv/bin/python benchmarks/bench_media.py [--images 12] [--rounds 2] [--threads 2] [--mmproj PATH]
Writes benchmarks/results/bench_media-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from harness import metadata, start_server, write_result
from harness.media import MTMD_MEDIA, png
from harness.mmproj import write_mmproj

from helios_core import default_model_path


def images(count: int) -> list[bytes]:
    return [(MTMD_MEDIA / "test-1.jpeg").read_bytes()] + [png(256, 256, seed=i) for i in range(1, count)]


def timed_requests(url: str, pictures: list[bytes]) -> list[float]:
    """Seconds per request, one image each, in order."""
    seconds = []
    with httpx.Client(timeout=600) as client:
        for picture in pictures:
            data = base64.b64encode(picture).decode()
            mime = "image/jpeg" if picture[:2] == b"\xff\xd8" else "image/png"
            content = [
                {"type": "text", "text": "Describe this image in one word."},
                {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
            ]
            body = {"messages": [{"role": "user", "content": content}], "max_tokens": 1, "temperature": 0}
            started = time.perf_counter()
            response = client.post(f"{url}/v1/chat/completions", json=body)
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mmproj", type=Path, default=None, help="default: a tiny random projector")
    args = parser.parse_args()
    model = default_model_path()
    with tempfile.TemporaryDirectory() as folder:
        mmproj = args.mmproj or write_mmproj(Path(folder) / "tiny.gguf")
        times: dict[str, list[float]] = {"llama-server": [], "helios": []}
        pictures = images(args.images)  # each server starts afresh each round: nothing is cached
        for round_ in range(args.rounds):
            for kind in times:
                server = start_server(
                    kind, model, args.threads, parallel=1, ctx_per_slot=2048, extra=("--mmproj", str(mmproj))
                )
                try:
                    timed_requests(server.url, [png(64, 64, seed=10_000 + round_)])  # warm-up, not counted
                    times[kind] += timed_requests(server.url, pictures)
                finally:
                    server.stop()
    medians = {kind: statistics.median(seconds) for kind, seconds in times.items()}
    ratio = medians["llama-server"] / medians["helios"]
    result = metadata(
        "bench_media", median_seconds=medians, ratio_llama_over_helios=ratio, seconds=times, threads=args.threads
    )
    write_result(result)
    for kind, median in medians.items():
        print(f"{kind:>13}: median {1000 * median:.0f} ms per image request ({len(times[kind])} requests)")
    print(f"ratio llama-server / helios: {ratio:.3f} (>= 0.95 is the bar)")


if __name__ == "__main__":
    main()
