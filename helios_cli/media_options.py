"""The flags for images and audio in: a projector, where media may come from, and the limits on it."""

from __future__ import annotations

import argparse

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
