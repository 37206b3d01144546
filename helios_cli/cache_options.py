"""The prompt cache's flags (--cache-ram); helios_http.server builds the tier (helios_core.prompt_cache) from them."""

from __future__ import annotations

import argparse

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
