"""Media bytes for tests and benchmarks, made here: PNGs of any size and colour, and malformed ones.

No imaging library: a PNG is a signature, an IHDR chunk, zlib-compressed rows and an IEND.
The tree's own test media (tools/mtmd/test-1.jpeg, test-2.mp3) are in MTMD_MEDIA.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .results import ROOT

MTMD_MEDIA = ROOT / "vendor" / "llama.cpp" / "tools" / "mtmd"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def png(width: int = 48, height: int = 48, seed: int = 0) -> bytes:
    """A valid RGB PNG of one colour (seeded): two seeds give images far apart, as noise would not."""
    colour = np.random.default_rng(seed).integers(0, 256, 3, dtype=np.uint8)
    pixels = np.broadcast_to(colour, (height, width, 3))
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))  # filter type 0 per row
    return _png(width, height, zlib.compress(rows))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height in its header and holds almost no data (a decompression bomb's shape)."""
    return _png(width, height, zlib.compress(b"\0" * 16))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
