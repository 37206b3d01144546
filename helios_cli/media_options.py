"""The flags for images and audio in: a projector, where media may come from, and the limits on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from helios_cli.options import number


def add_media_options(parser: argparse.ArgumentParser) -> None:
    """serve's media flags (issue 27): --mmproj, sources, limits."""
    group = parser.add_argument_group("images and audio")
    group.add_argument(
        "--mmproj",
        default=None,
        metavar="PATH",
        help="a multimodal projector GGUF for the model: chat image_url / input_audio parts, Responses "
        "input_image and Messages image blocks are read through it (default: text only)",
    )
    group.add_argument(
        "--media-path",
        default=None,
        metavar="DIR",
        help="serve local files under DIR as image URLs (a path or file:// URL relative to DIR); off by default",
    )
    group.add_argument(
        "--allow-remote-media",
        action="store_true",
        help="fetch http(s) image URLs (off by default: a 400 names the part)",
    )
    group.add_argument(
        "--media-max-mb", type=number(float, 0, low_open=True), default=20.0, help="bytes per media item, in MiB"
    )
    group.add_argument("--media-max-items", type=number(int, 1), default=8, help="media items per request")
    group.add_argument(
        "--media-max-pixels",
        type=number(int, 1),
        default=4096 * 4096,
        help="width x height of an image, read from its header before it is decoded",
    )
    group.add_argument(
        "--media-max-audio-seconds",
        type=number(float, 0, low_open=True),
        default=600.0,
        help="seconds of one audio item, read from its header",
    )


def add_generate_media_options(parser: argparse.ArgumentParser) -> None:
    """generate's media flags: a projector, and the files the prompt shows it."""
    group = parser.add_argument_group("images and audio")
    group.add_argument("--mmproj", default=None, metavar="PATH", help="a multimodal projector GGUF for the model")
    group.add_argument(
        "--image", action="append", default=[], metavar="PATH", help="an image before the prompt (repeatable)"
    )
    group.add_argument(
        "--audio", action="append", default=[], metavar="PATH", help="an audio file (wav, mp3) before the prompt"
    )


def check_generate_media(args: argparse.Namespace) -> None:
    """--image/--audio need --mmproj, and every file must be there: one line before anything loads."""
    from helios_http.media import projector_path

    files = args.image + args.audio
    if files and args.mmproj is None:
        raise ValueError("--image and --audio need --mmproj, the model's projector")
    if args.mmproj is not None:
        args.mmproj = str(projector_path(args.mmproj))  # a hub spec becomes its cached file
    for path in files:
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")


def media_prompt_of(args: argparse.Namespace, model, text: str, render, n_ubatch: int):
    """The prompt with the --image/--audio files before the text; `render(content)` makes the prompt text
    of the user's content (the chat template, or the content as it is)."""
    from helios_core import media_prompt
    from helios_core.projector import Projector

    projector = Projector(model, args.mmproj, n_threads=args.threads)  # closed with the model
    files = args.image + args.audio
    content = "".join(projector.marker for _ in files) + "\n" + text
    items = [Path(path).read_bytes() for path in files]
    return media_prompt.build(projector, render(content), items, n_ubatch=n_ubatch)
