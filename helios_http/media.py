"""Media parts of a request (images, audio) and the limits on them, shared by chat, Responses and Messages.

Each API family turns its own part shapes into MediaRefs (chat's `image_url` and
`input_audio`, Responses' `input_image`, Messages' `image` blocks) and leaves SENTINEL
in the message text where each was. Before anything is decoded, `load` resolves each
ref to bytes (a data URL; a file only under --media-path; http(s) only with
--allow-remote-media) and checks the limits: items per request, bytes per item, pixels
from the image's header, seconds of audio from its header. Each refusal is a 400
naming the part. Decoding, resizing and slicing are then libmtmd's (helios_core.projector).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios_core import media_prompt
from helios_core.engine import Engine
from helios_core.errors import ModelNotFoundError
from helios_core.media_prompt import MediaPrompt
from helios_core.projector import MediaError, Projector
from helios_core.resolve import resolve_model
from helios_http.errors import invalid

MiB = 1024 * 1024
# Stands where a media part was in a message's text until the prompt is built; no client can type it.
SENTINEL = f"<__helios_media_{secrets.token_hex(8)}__>"
AUDIO_FORMATS = ("wav", "mp3")
# A chat part translated from another family's (Responses, Messages) names that family's field here,
# so a refusal names what the client sent.
PARAM_KEY = "_helios_param"
REMOTE_TIMEOUT_SECONDS = 10.0


@dataclass
class MediaLimits:
    max_bytes: int = 20 * MiB  # one item's bytes, as sent (after base64 decoding)
    max_items: int = 8  # media items in one request
    max_pixels: int = 4096 * 4096  # width x height, read from the image's header
    max_audio_seconds: float = 600.0


@dataclass
class MediaServing:
    """How this server takes media: its projector (None: text only), limits and sources."""

    limits: MediaLimits = field(default_factory=MediaLimits)
    media_path: Path | None = None  # --media-path: local files are read only under this folder
    allow_remote: bool = False  # --allow-remote-media: http(s) URLs are fetched
    projector: Projector | None = None
    mmproj: Path | None = None  # --mmproj's file, loaded with the model

    @property
    def modalities(self) -> list[str]:
        return self.projector.modalities if self.projector is not None else []


def serving_from(args: Any) -> MediaServing:
    """The media settings of serve's flags (helios_cli/media_options.py); the projector loads with the model."""
    mmproj = projector_path(args.mmproj) if args.mmproj is not None else None
    if args.media_path is not None and not Path(args.media_path).is_dir():
        raise ValueError(f"--media-path {args.media_path}: no such folder")
    limits = MediaLimits(
        int(args.media_max_mb * MiB), args.media_max_items, args.media_max_pixels, args.media_max_audio_seconds
    )
    folder = Path(args.media_path) if args.media_path is not None else None
    return MediaServing(limits, folder, args.allow_remote_media, mmproj=mmproj)


def projector_path(spec: str) -> Path:
    """--mmproj's file: a path, or a hub spec (owner/repo:file.gguf) already in the cache or fetched."""
    try:
        return resolve_model(spec)
    except ModelNotFoundError:
        raise ValueError(f"--mmproj {spec}: no such file (give a .gguf path or owner/repo:file.gguf)") from None


@dataclass
class MediaRef:
    """One media part of a request: where it comes from, and the request field that names it."""

    kind: str  # "image" or "audio"
    where: str
    url: str | None = None  # an image: a data URL, a file path or file:// URL, or http(s)
    data: str | None = None  # audio: base64
    format: str | None = None  # audio: wav or mp3


def chat_part(part: dict[str, Any], where: str) -> MediaRef | None:
    """Chat's `image_url` and `input_audio` content parts (None for any other type)."""
    kind = part.get("type")
    where = part.get(PARAM_KEY) or where
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise invalid(f'{where}.image_url must be {{"url": "data:image/png;base64,..."}}', f"{where}.image_url")
        return MediaRef("image", where, url=url)
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise invalid(f'{where}.input_audio must be {{"data": BASE64, "format": "wav"}}', f"{where}.input_audio")
        if audio.get("format") not in AUDIO_FORMATS:
            raise invalid(f"{where}.input_audio.format must be wav or mp3", f"{where}.input_audio.format")
        return MediaRef("audio", where, data=audio["data"], format=audio["format"])
    return None


@dataclass
class LoadedMedia:
    """A request's media bytes, in part order, with the projector that will read them."""

    projector: Projector
    items: list[bytes]


def responses_image(part: dict[str, Any], where: str) -> dict[str, Any]:
    """A Responses `input_image` part, checked, in its item shape (stored and listed as it came)."""
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        hint = "file_id is not offered; send" if part.get("file_id") is not None else "send"
        raise invalid(f"{where}: {hint} image_url as a data URL", f"{where}.image_url")
    return {"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"}


def as_chat_image(url: str, where: str) -> dict[str, Any]:
    """Chat's image_url part for an image another family sent, naming that family's field."""
    return {"type": "image_url", "image_url": {"url": url}, PARAM_KEY: where}


def messages_image(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An Anthropic `image` block (a base64 or url source) as chat's image_url part."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        return as_chat_image(f"data:{source['media_type']};base64,{source['data']}", where)
    if kind == "url" and isinstance(source.get("url"), str):
        return as_chat_image(source["url"], where)
    raise invalid(
        f'{where}.source must be {{"type": "base64", "media_type": ..., "data": ...}} or {{"type": "url", "url": ...}}',
        f"{where}.source",
    )


def load(refs: list[MediaRef], serving: MediaServing) -> LoadedMedia:
    """Each ref's bytes, every limit checked; a 400 naming the part for the first that fails one."""
    if serving.projector is None:
        raise invalid(
            f"{refs[0].where}: this model reads text only (serve it with --mmproj to send images or audio)",
            refs[0].where,
        )
    limits = serving.limits
    if len(refs) > limits.max_items:
        where = refs[limits.max_items].where
        raise invalid(f"{where}: at most {limits.max_items} media items a request", where)
    loaded = []
    for ref in refs:
        if ref.kind not in serving.projector.modalities:
            raise invalid(f"{ref.where}: this model's projector reads no {ref.kind}", ref.where)
        data = _audio_bytes(ref, limits) if ref.kind == "audio" else _image_bytes(ref, serving)
        if len(data) > limits.max_bytes:
            too_many = f"{len(data)} bytes, more than the {limits.max_bytes} a media item may have"
            raise invalid(f"{ref.where}: {too_many}", ref.where)
        if ref.kind == "image":
            _check_image(data, ref.where, limits)
        else:
            _check_audio(data, ref, limits)
        loaded.append(data)
    return LoadedMedia(serving.projector, loaded)


def prompt(engine: Engine, text: str, refs: list[MediaRef], loaded: LoadedMedia | None) -> MediaPrompt:
    """The rendered text (SENTINEL where each part was) and the parts' bytes as the engine's prompt.

    Runs libmtmd's decoding: bytes it cannot read are a 400 naming their part.
    """
    if loaded is None:  # a token count (count_tokens, input_tokens), which reads no media
        where = refs[0].where
        refused = "token counts of prompts with media are not offered; a request's usage says them"
        raise invalid(f"{where}: {refused}", where)
    projector = loaded.projector
    marked = text.replace(SENTINEL, projector.marker)
    try:
        return media_prompt.build(projector, marked, loaded.items, n_ubatch=engine.scheduler.runner.n_ubatch)
    except MediaError as error:
        where = refs[error.item].where if error.item is not None else "messages"
        raise invalid(f"{where}: {error}", where) from None


# --- sources ----------------------------------------------------------------------------------


def _image_bytes(ref: MediaRef, serving: MediaServing) -> bytes:
    url = ref.url or ""
    if url.startswith("data:"):
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise invalid(f"{ref.where}: a data URL must be data:MIME;base64,DATA", ref.where)
        return _base64(payload, ref.where, serving.limits)
    if url.startswith(("http://", "https://")):
        if not serving.allow_remote:
            raise invalid(
                f"{ref.where}: remote media URLs are off on this server (--allow-remote-media turns them on); "
                "send the image as a data URL",
                ref.where,
            )
        return _fetch(url, ref.where, serving.limits)
    return _local_file(url.removeprefix("file://"), ref.where, serving)


def _audio_bytes(ref: MediaRef, limits: MediaLimits) -> bytes:
    return _base64(ref.data or "", f"{ref.where}.input_audio.data", limits)


def _base64(payload: str, where: str, limits: MediaLimits) -> bytes:
    if len(payload) * 3 // 4 > limits.max_bytes + 3:  # refused before decoding
        raise invalid(f"{where}: more than the {limits.max_bytes} bytes a media item may have", where)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}: the data is not valid base64", where) from None


def _local_file(name: str, where: str, serving: MediaServing) -> bytes:
    if serving.media_path is None:
        raise invalid(f"{where}: local files are off on this server (--media-path DIR serves a folder)", where)
    root = serving.media_path.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise invalid(f"{where}: no such file under the server's --media-path", where)
    if path.stat().st_size > serving.limits.max_bytes:
        raise invalid(f"{where}: more than the {serving.limits.max_bytes} bytes a media item may have", where)
    return path.read_bytes()


def _fetch(url: str, where: str, limits: MediaLimits) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT_SECONDS) as response:
            data = response.read(limits.max_bytes + 1)
    except OSError as error:
        raise invalid(f"{where}: the image could not be fetched ({error})", where) from None
    return data


# --- headers: what a file says it holds, read before anything decodes it -----------------------


def _check_image(data: bytes, where: str, limits: MediaLimits) -> None:
    size = image_size(data)
    if size is None:
        raise invalid(f"{where}: not an image format this server reads (PNG, JPEG, GIF or BMP)", where)
    width, height = size
    if width <= 0 or height <= 0:
        raise invalid(f"{where}: the image header says {width} x {height} pixels", where)
    if width * height > limits.max_pixels:
        raise invalid(f"{where}: {width} x {height} pixels, more than the {limits.max_pixels} an image may have", where)


def _check_audio(data: bytes, ref: MediaRef, limits: MediaLimits) -> None:
    seconds = audio_seconds(data)
    if seconds is None:
        raise invalid(f"{ref.where}: the audio is not {ref.format} this server can read", ref.where)
    if seconds > limits.max_audio_seconds:
        raise invalid(
            f"{ref.where}: {seconds:.0f} s of audio, more than the {limits.max_audio_seconds:g} s an item may have",
            ref.where,
        )


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or BMP header; None for anything else (SVG, WebP, garbage)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return width, abs(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def audio_seconds(data: bytes) -> float | None:
    """Seconds of a WAV (from its fmt and data chunks) or an MP3 (from its first frame's bitrate); None otherwise."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav_seconds(data)
    return _mp3_seconds(data)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame: the size
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _wav_seconds(data: bytes) -> float | None:
    i, byte_rate = 12, 0
    while i + 8 <= len(data):
        kind, size = data[i : i + 4], struct.unpack("<I", data[i + 4 : i + 8])[0]
        if kind == b"fmt " and size >= 16:
            byte_rate = struct.unpack("<I", data[i + 16 : i + 20])[0]
        elif kind == b"data":
            return size / byte_rate if byte_rate else None
        i += 8 + size + (size & 1)
    return None


# MPEG-1 Layer III bitrates (kbit/s) by the header's 4-bit index; MPEG-2/2.5 Layer III below.
_MP3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)
_MP3_KBPS_LSF = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0)


def _mp3_seconds(data: bytes) -> float | None:
    start = 0
    if data.startswith(b"ID3") and len(data) >= 10:
        size = data[6:10]
        start = 10 + ((size[0] & 0x7F) << 21 | (size[1] & 0x7F) << 14 | (size[2] & 0x7F) << 7 | (size[3] & 0x7F))
    for i in range(start, min(len(data) - 4, start + 64 * 1024)):
        if data[i] == 0xFF and data[i + 1] & 0xE6 == 0xE2:  # frame sync, Layer III
            mpeg1 = bool(data[i + 1] & 0x08)
            kbps = (_MP3_KBPS if mpeg1 else _MP3_KBPS_LSF)[data[i + 2] >> 4]
            if kbps:
                return (len(data) - i) * 8 / (kbps * 1000)
    return None
