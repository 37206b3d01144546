"""The prompt cache's flags; helios_http.server builds the tier (helios_core.prompt_cache) and slot files from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from helios_cli.options import number
from helios_core.prompt_cache import DEFAULT_CACHE_RAM_MIB


def add_prompt_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-ram",
        type=number(float, 0),
        default=DEFAULT_CACHE_RAM_MIB,
        metavar="MiB",
        help="host memory for the KV states of prefixes that left their slot, restored when they come back "
        f"(agent clients resending long prefixes); least recently used out first; 0 turns it off "
        f"(default {DEFAULT_CACHE_RAM_MIB}, as llama-server)",
    )
    parser.add_argument(
        "--slot-save-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for POST /slots/{id}?action=save|restore (llama-server's); files carry the model, llama.cpp "
        "build and context they are valid for, and others are refused",
    )
    parser.add_argument(
        "--cache-persist",
        action="store_true",
        help="write the --cache-ram tier (and what the slots hold) to DIR/prompt-cache at shutdown and read it "
        "back at start-up, so a restart is warm; needs --slot-save-path",
    )


def check_prompt_cache_options(args: argparse.Namespace) -> None:
    """Refuse, in one line, a --cache-persist with nowhere to write or no tier to write."""
    if args.cache_persist and args.slot_save_path is None:
        raise ValueError("--cache-persist needs --slot-save-path DIR (it writes DIR/prompt-cache)")
    if args.cache_persist and args.cache_ram <= 0:
        raise ValueError("--cache-persist needs the RAM tier: --cache-ram above 0")
