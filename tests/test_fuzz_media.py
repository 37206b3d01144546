"""Fuzzing media parts through a real `serve --mmproj`: chat, Responses and Messages, never a 5xx.

Marked slow: `pytest -m slow tests/test_fuzz_media.py`. Bodies carry image and audio parts
in each family's shape, with bytes that are valid, truncated, lying about their size (a
20,000 x 20,000 header), not images at all (SVG, noise), or not base64; URLs that are
remote, outside --media-path, or junk; and junk in place of any field. Drawn up front
with a fixed seed, sent by a few client threads. HELIOS_FUZZ_MEDIA_BODIES sets the count
(default 400).
"""

from __future__ import annotations

import base64
import collections
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from benchmarks.harness.media import MTMD_MEDIA, SVG, png, png_header, truncated
from benchmarks.harness.mmproj import write_mmproj
from tests.server_process import PATIENCE, ServerProcess
from tests.test_fuzz_server import junk, send, sometimes_junk

N_BODIES = int(os.environ.get("HELIOS_FUZZ_MEDIA_BODIES", "400"))
CLIENTS = 3

JPEG = (MTMD_MEDIA / "test-1.jpeg").read_bytes()
MP3 = (MTMD_MEDIA / "test-2.mp3").read_bytes()
media_bytes = st.one_of(
    st.sampled_from([png(seed=1), png(8, 8, seed=2), JPEG, SVG, MP3, b"", b"GIF89a", b"BM", b"\xff\xd8\xff"]),
    st.builds(truncated, st.sampled_from([png(seed=3), JPEG, MP3])),
    st.builds(png_header, st.integers(0, 70_000), st.integers(0, 70_000)),
    st.binary(max_size=64),
)
b64 = st.one_of(media_bytes.map(lambda data: base64.b64encode(data).decode()), st.text(max_size=20))
mime = st.sampled_from(["image/png", "image/jpeg", "image/svg+xml", "audio/mpeg", "", "x"])
url = st.one_of(
    st.builds(lambda m, d: f"data:{m};base64,{d}", mime, b64),
    st.sampled_from(["https://example.com/a.png", "http://127.0.0.1:1/x.png", "../x.png", "/etc/passwd", "file://a"]),
    st.sampled_from(["data:image/png,raw", "data:", "", "test-1.jpeg"]),
)
chat_part = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": sometimes_junk(st.fixed_dictionaries({"url": url}))}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("input_audio"),
            "input_audio": sometimes_junk(
                st.fixed_dictionaries({"data": b64, "format": sometimes_junk(st.sampled_from(["wav", "mp3", "ogg"]))})
            ),
        }
    ),
)
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)})
chat = st.fixed_dictionaries(
    {
        "messages": st.lists(text_part | chat_part, min_size=1, max_size=4).map(
            lambda parts: [{"role": "user", "content": parts}]
        ),
        "max_tokens": st.integers(1, 2),
    }
)
responses_part = st.fixed_dictionaries(
    {"type": st.just("input_image")}, optional={"image_url": sometimes_junk(url), "file_id": junk, "detail": junk}
)
responses = st.fixed_dictionaries(
    {
        "input": st.lists(
            responses_part | st.fixed_dictionaries({"type": st.just("input_text"), "text": st.text(max_size=10)}),
            min_size=1,
            max_size=3,
        ).map(lambda parts: [{"role": "user", "content": parts}]),
        "max_output_tokens": st.integers(1, 2),
    }
)
source = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": sometimes_junk(mime), "data": sometimes_junk(b64)}),
    st.fixed_dictionaries({"type": st.just("url"), "url": sometimes_junk(url)}),
    junk,
)
messages = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries({"type": st.just("image"), "source": source})
            | st.fixed_dictionaries({"type": st.just("text"), "text": st.text(min_size=1, max_size=10)}),
            min_size=1,
            max_size=3,
        ).map(lambda blocks: [{"role": "user", "content": blocks}]),
        "max_tokens": st.integers(1, 2),
    }
)
requests = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), chat),
    st.tuples(st.just("/v1/responses"), responses),
    st.tuples(st.just("/v1/messages"), messages),
    st.tuples(st.just("/v1/messages/count_tokens"), messages),
)


def draw_requests(count: int) -> list[tuple[str, bytes]]:
    drawn: list[tuple[str, bytes]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests)
    def collect(request):
        path, body = request
        drawn.append((path, json.dumps(body).encode()))

    collect()
    return drawn[:count]


@pytest.mark.slow
def test_fuzzed_media_parts_never_get_a_5xx(tmp_path):
    bodies = draw_requests(N_BODIES)
    mmproj = write_mmproj(tmp_path / "tiny.gguf")
    (tmp_path / "test-1.jpeg").write_bytes(JPEG)
    args = ("--ctx-size", "256", "--parallel", "2", "--mmproj", str(mmproj), "--media-path", str(tmp_path))
    with ServerProcess(*args) as server:

        def run(share: list[tuple[str, bytes]]):
            with httpx.Client(base_url=server.url) as client:
                return [(path, *send(client, path, body)) for path, body in share]

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for part in pool.map(run, [bodies[i::CLIENTS] for i in range(CLIENTS)]) for r in part]
        statuses = collections.Counter((path, status) for path, status, _ in results)
        failures = [(path, status, error) for path, status, error in results if status >= 500 or error]
        assert not failures, (
            f"{len(failures)} failures, e.g. {failures[:5]}; statuses {statuses}\n{server.log()[-3000:]}"
        )
        assert any(status == 200 for _, status, _ in results), statuses  # valid media got through too
        assert httpx.get(f"{server.url}/health", timeout=PATIENCE).status_code == 200
