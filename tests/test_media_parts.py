"""helios_http/media.py without a server: what headers say, and the refusals that need no projector."""

from __future__ import annotations

import struct

import pytest

from benchmarks.harness.media import MTMD_MEDIA, SVG, png, png_header
from helios_http.errors import APIError
from helios_http.media import MediaRef, MediaServing, audio_seconds, image_size, load


def wav(seconds: float, rate: int = 16000) -> bytes:
    data = b"\0\0" * int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_image_sizes_come_from_the_headers():
    assert image_size(png(40, 30)) == (40, 30)
    assert image_size(png_header(20_000, 20_000)) == (20_000, 20_000)
    assert image_size((MTMD_MEDIA / "test-1.jpeg").read_bytes())[0] > 0


def test_svg_and_garbage_have_no_image_size():
    assert image_size(SVG) is None and image_size(b"hello") is None


def test_audio_seconds_come_from_the_headers():
    assert audio_seconds(wav(2.0)) == pytest.approx(2.0)
    mp3 = audio_seconds((MTMD_MEDIA / "test-2.mp3").read_bytes())
    assert mp3 is not None and 1.0 < mp3 < 60.0


def test_a_model_without_a_projector_refuses_media_with_a_400_naming_the_part():
    with pytest.raises(APIError) as raised:
        load([MediaRef("image", "messages[0].content[1]", url="data:image/png;base64,AAAA")], MediaServing())
    assert raised.value.status == 400 and raised.value.param == "messages[0].content[1]"
    assert "--mmproj" in str(raised.value)


def test_a_remote_image_is_fetched_only_when_the_server_allows_it(tmp_path):
    import functools
    import threading
    import types
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "a.png").write_bytes(png(seed=5))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as http:
        threading.Thread(target=http.serve_forever, daemon=True).start()
        ref = MediaRef("image", "messages[0].content[1]", url=f"http://127.0.0.1:{http.server_port}/a.png")
        images_only = types.SimpleNamespace(modalities=["image"])  # load() asks the projector only this
        loaded = load([ref], MediaServing(allow_remote=True, projector=images_only))
        with pytest.raises(APIError, match="--allow-remote-media"):
            load([ref], MediaServing(projector=images_only))
        http.shutdown()
    assert loaded.items == [png(seed=5)]
