"""`helios-engine rpc-worker`: this machine's CPU (or GPUs) served to `--rpc` clients by llama.cpp's RPC server."""

from __future__ import annotations

import argparse
import os
import sys

from helios_cli.options import HelpFormatter, number, positive_int


def add_command(commands) -> None:
    """The `rpc-worker` sub-command and its flags, on argparse's sub-parsers `commands`."""
    worker = commands.add_parser(
        "rpc-worker",
        help="serve this machine's CPU (or GPUs) to `--rpc` clients: llama.cpp's RPC server",
        formatter_class=HelpFormatter,
    )
    worker.add_argument("--host", default="127.0.0.1", help="address to listen on; RPC has no authentication")
    worker.add_argument("--port", type=number(int, 1, 65535), default=50052, help="port to listen on")
    worker.add_argument(
        "--threads",
        "-t",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="CPU threads for the computations clients send",
    )
    worker.add_argument(
        "--cache",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="keep tensors clients send on disk, so a restarted client's load is local (default DIR: "
        "$HELIOS_CACHE/rpc)",
    )


def run(args: argparse.Namespace) -> None:
    import signal
    import threading

    from helios_core import rpc
    from helios_core.resolve import helios_cache

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"helios-engine: warning: the RPC worker listens on {args.host}; RPC has no authentication, so "
            "anyone who can reach it can run computations on this machine and read what clients send",
            file=sys.stderr,
        )
    cache = None if args.cache is None else (args.cache or helios_cache() / "rpc")
    # ggml's server loop never returns: it runs on a daemon thread, so Ctrl+C and SIGTERM end the process.
    worker = threading.Thread(
        target=rpc.serve_worker,
        args=(args.host, args.port),
        kwargs={"n_threads": args.threads, "cache_dir": cache},
        name="rpc-worker",
        daemon=True,
    )
    worker.start()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    while worker.is_alive():
        worker.join(0.5)
    # ggml's loop only ends when it cannot start (its reason is on stderr just above).
    print(f"helios-engine: the RPC worker could not serve on {args.host}:{args.port}", file=sys.stderr)
    raise SystemExit(1)
