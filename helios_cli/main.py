"""`helios-engine`: the command line.

helios-engine generate   [--model SPEC] --prompt TEXT [--chat] [sampling options]
helios-engine serve      [--model SPEC] [--host H] [--port P] ...
helios-engine rpc-worker [--host H] [--port P] [--threads N] [--cache [DIR]]
"""

from __future__ import annotations

import argparse
import sys

from helios_cli import generate, rpc_worker, serve
from helios_cli.options import HelpFormatter
from helios_core import backend
from helios_core.errors import HeliosError


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="helios-engine", description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"helios-engine {backend.version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    generate.add_command(commands)
    serve.add_command(commands)
    doctor = commands.add_parser(
        "doctor",
        help="say which llama.cpp build and CPU path this machine runs, and why",
        formatter_class=HelpFormatter,
    )
    doctor.add_argument(
        "--reprobe", action="store_true", help="prove the CPU variants again instead of reading the cached verdict"
    )
    rpc_worker.add_command(commands)
    return parser


def doctor_command(args: argparse.Namespace) -> None:
    from helios_core import _llama, cpu_variant

    folder = _llama.lib_dir()
    print(f"helios-engine {backend.version()}")
    print(f"libraries: {folder}")
    flags = folder / "cmake-args"
    print(f"built with CMAKE_ARGS: {flags.read_text().strip() if flags.is_file() else '(unknown)'}")
    verdict = backend.cpu_verdict()  # loads the backends: the devices below need them
    if args.reprobe and verdict is not None:
        verdict = cpu_variant.choose(folder, reprobe=True)
    if verdict is None:
        print("CPU backend: linked into the build (no variants to choose from)")
    else:
        print(f"{verdict.summary()} [{verdict.how}; probe {verdict.seconds:.1f} s]")
        for name, why in verdict.skipped:
            print(f"  skipped {name}: {why}")
    for device in backend.devices():
        print(f"device {device.name}: {device.description} ({device.kind})")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"generate": generate.run, "serve": serve.run, "rpc-worker": rpc_worker.run, "doctor": doctor_command}
    try:
        commands[args.command](args)
    except (HeliosError, ValueError) as e:
        print(f"helios-engine: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line on stderr (exit 2), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


if __name__ == "__main__":
    main()
