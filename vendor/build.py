"""Build llama.cpp's shared libraries in the per-machine cache, then install them into helios_core/lib.

CMake configures from the cached source folder (fetch.source_dir(): the
pinned llama.cpp tree plus a copy of our CMakeLists.txt), never from a
clone, and builds into $HELIOS_CACHE/build/<key>, keyed by that folder, the
machine and the CMake flags. So every clone on the machine, wherever it sits
and wherever earlier clones sat, shares one build, and a fresh clone
compiles nothing. The libraries are copied into helios_core/lib, where
helios_core looks first (HELIOS_LIB_DIR overrides).

CMake flags: BASE_CMAKE_ARGS, then CMAKE_ARGS from the environment when it
is set, even empty; else the flags the libraries in helios_core/lib were
built with (kept there in cmake-args); else none. So after `make build
CMAKE_ARGS=-DGGML_CUDA=ON` a plain `make serve` keeps the CUDA libraries,
and `make build CMAKE_ARGS=` goes back to the CPU ones.

After a build, the CPU variant this machine really runs is proved by running
it (helios_core/cpu_variant.py), and the tools (--tools) are linked into a
folder of their own, tools_dir(), without the variants that faulted here, so
llama-bench and llama-server load what helios loads.

Usage:
  python vendor/build.py                  libllama + ggml
  python vendor/build.py --tools          also llama-bench and llama-server
  CMAKE_ARGS="-DGGML_CUDA=ON" python vendor/build.py
  python vendor/build.py --print-bin-dir  where the tools are
  python vendor/build.py --into DIR       the libraries into DIR instead (setup.py's wheel build)
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import fetch

ROOT = fetch.VENDOR_DIR.parent
LIB_DEST = ROOT / "helios_core" / "lib"
# The CMAKE_ARGS that the installed libraries were built with.
FLAGS_FILE = LIB_DEST / "cmake-args"
LIBRARY_TARGETS = ["llama", "mtmd"]
# What helios_core loads: libllama, the ggml libraries it links (not the tools' own), and libmtmd
# (images and audio in: helios_core/_mtmd.py).
LIBRARY_GLOBS = ["libllama.so*", "libggml*.so*", "libmtmd.so*", "libllama*.dylib", "libggml*.dylib", "libmtmd*.dylib"]
TOOL_TARGETS = ["llama-bench", "llama-server", "llama-perplexity"]
# Every build starts from these; CMAKE_ARGS comes after them, and a later -D wins. ggml's CPU
# backend becomes one loadable library per instruction-set level, as llama.cpp's release builds
# ship it, and helios_core loads the best one this machine is proved to run. -march=native
# (GGML_NATIVE) would compile in whatever cpuid advertises, AMX included, where a hypervisor may
# advertise AMX and fault on it: no build step could then fall back. One build also serves every
# machine of the architecture, which `pip wheel .` needs.
BASE_CMAKE_ARGS = (
    ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON", "-DGGML_NATIVE=OFF"]
    if sys.platform == "linux" and os.uname().machine in ("x86_64", "aarch64")
    else []
)


def resolve_cmake_args(environ: Mapping[str, str] = os.environ, remembered: Path = FLAGS_FILE) -> str:
    """CMAKE_ARGS if set (an empty value means the plain CPU build), else the remembered flags, else ""."""
    if "CMAKE_ARGS" in environ:
        return environ["CMAKE_ARGS"]
    try:
        return remembered.read_text().strip()
    except FileNotFoundError:
        return ""


def cmake_args() -> list[str]:
    return BASE_CMAKE_ARGS + shlex.split(resolve_cmake_args())


def build_dir(args: list[str] | None = None) -> Path:
    """The cached build folder for these flags (default: the resolved ones); the same from every clone."""
    args = cmake_args() if args is None else args
    key = hashlib.sha256("\0".join([str(fetch.source_dir()), os.uname().machine, *args]).encode()).hexdigest()[:16]
    return fetch.cache_root() / "build" / key


def tools_dir(args: list[str] | None = None) -> Path:
    """Where llama-bench, llama-server and llama-perplexity run from, with the libraries this machine runs."""
    return build_dir(args) / "tools"


def cmake_cache(out: Path) -> dict[str, str]:
    """The entries of out/CMakeCache.txt by name (types dropped); empty when it is not configured."""
    try:
        text = (out / "CMakeCache.txt").read_text()
    except FileNotFoundError:
        return {}
    entries = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and ":" in name and not line.startswith(("#", "//")):
            entries[name.partition(":")[0]] = value
    return entries


def configured_source(out: Path) -> Path | None:
    """The source folder a build folder was configured from (CMAKE_HOME_DIRECTORY), or None."""
    home = cmake_cache(out).get("CMAKE_HOME_DIRECTORY")
    return Path(home) if home else None


def cmake() -> str:
    # Prefer the cmake that our own dependencies installed beside this Python.
    beside = Path(sys.executable).parent / "cmake"
    return str(beside) if beside.exists() else shutil.which("cmake") or "cmake"


def sync_cmakelists() -> None:
    """Copy our CMakeLists.txt into the cached source folder when its content differs.

    Written only on a change, so CMake re-configures only then.
    """
    data = (ROOT / "CMakeLists.txt").read_bytes()
    dest = fetch.source_dir() / "CMakeLists.txt"
    if dest.exists() and dest.read_bytes() == data:
        return
    staging = dest.with_name(f".CMakeLists.txt.{os.getpid()}")
    staging.write_bytes(data)
    staging.replace(dest)


def build(targets: list[str], args: list[str]) -> Path:
    """Configure (when needed) and build targets in the cached build folder; returns its bin folder."""
    out = build_dir(args)
    source = fetch.source_dir()
    entries = cmake_cache(out)
    home, command = entries.get("CMAKE_HOME_DIRECTORY"), entries.get("CMAKE_COMMAND")
    if home is None or os.path.realpath(home) != os.path.realpath(source):
        if home is not None:
            # Configured from elsewhere (an older layout, a moved cache): CMake cannot move a build.
            print(f"build: {out} was configured from {home}; configuring it afresh from {source}")
            shutil.rmtree(out)
        _configure(source, out, args, fresh=True)
    elif not command or not Path(command).exists():
        # CMake writes its own path into the build, and the cmake that configured it left
        # with its clone's venv. Configuring again in place records ours and compiles nothing.
        print(f"build: {command} is gone; configuring {out} again with {cmake()}")
        _configure(source, out, args, fresh=False)
    jobs = str(os.cpu_count() or 2)
    subprocess.run([cmake(), "--build", str(out), "-j", jobs, "--target", *targets], check=True)
    return out / "bin"


def install_libraries(bin_dir: Path, flags: str, dest_dir: Path | None = None) -> None:
    """Copy libllama and ggml (symlinks kept) into helios_core/lib and record the flags they were built with.

    Each file is swapped in with a rename, never rewritten in place, so a process
    that has the old libraries loaded keeps running and one starting now never
    finds a library missing; unchanged files are left alone.
    """
    dest_dir = LIB_DEST if dest_dir is None else dest_dir
    flags_file = dest_dir / FLAGS_FILE.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    built = {path for pattern in LIBRARY_GLOBS for path in bin_dir.glob(pattern)}
    # Real files first, so a link never points at a file that is not there yet.
    for lib in sorted(built, key=lambda path: (path.is_symlink(), path.name)):
        dest = dest_dir / lib.name
        staging = dest_dir / f".{lib.name}.{os.getpid()}"
        if lib.is_symlink():
            if dest.is_symlink() and os.readlink(dest) == os.readlink(lib):
                continue
            staging.unlink(missing_ok=True)
            staging.symlink_to(os.readlink(lib))
        else:
            if dest.is_file() and not dest.is_symlink() and filecmp.cmp(lib, dest, shallow=False):
                continue
            shutil.copy2(lib, staging)
        staging.replace(dest)
    names = {lib.name for lib in built}
    for old in dest_dir.glob("lib*"):
        if old.name not in names:
            old.unlink()
    if not flags_file.is_file() or flags_file.read_text() != flags + "\n":
        staging = flags_file.with_name(f".{flags_file.name}.{os.getpid()}")
        staging.write_text(flags + "\n")
        staging.replace(flags_file)


def probe_cpu(lib_dir: Path) -> list[str]:
    """Prove which CPU variant in lib_dir runs here (a cached verdict answers at once); the faulted ones.

    Runs helios_core's probe in a child of this Python. Where helios_core cannot be imported (a pip
    build environment has none of its dependencies) the probe is left to helios_core's first run.
    """
    if not any(lib_dir.glob("libggml-cpu-*.so")):
        return []
    code = "import sys; from helios_core.cpu_variant import main; main(sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, "choose", str(lib_dir)], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        if "ModuleNotFoundError" in result.stderr:
            print("build: helios_core's dependencies are not installed here; the CPU probe runs on its first use")
            return []
        sys.exit(f"build: no CPU build of ggml runs on this machine:\n{result.stderr.strip()}")
    summary, faulted = result.stdout.strip().splitlines()[-2:]
    print(f"build: {summary}")
    return json.loads(faulted)


def link_tools(bin_dir: Path, dest: Path, faulted: list[str]) -> None:
    """Hard-link the tools and their libraries into dest, leaving out the CPU variants that faulted here.

    ggml's tools load the best-scoring variant found beside their executable; one that cpuid
    advertises and the machine faults on must not be there to be found.
    """
    dest.mkdir(parents=True, exist_ok=True)
    skip = {f"libggml-cpu-{name}.so" for name in faulted}
    wanted = {path.name: path for path in bin_dir.iterdir() if path.name not in skip and not path.is_dir()}
    for old in dest.iterdir():
        if old.name not in wanted:
            old.unlink()
    for name, path in wanted.items():
        target = dest / name
        if path.is_symlink():
            if not (target.is_symlink() and os.readlink(target) == os.readlink(path)):
                target.unlink(missing_ok=True)
                target.symlink_to(os.readlink(path))
            continue
        if target.exists() and os.path.samefile(target, path):
            continue
        staging = dest / f".{name}.{os.getpid()}"
        staging.unlink(missing_ok=True)
        try:
            os.link(path, staging)
        except OSError:
            shutil.copy2(path, staging)
        staging.replace(target)


def _configure(source: Path, out: Path, args: list[str], fresh: bool) -> None:
    configure = [cmake(), "-S", str(source), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", *args]
    if subprocess.run(configure, stdout=subprocess.DEVNULL).returncode != 0:
        if fresh:
            # Leave no half-configured folder to be mistaken for a good one next time.
            shutil.rmtree(out, ignore_errors=True)
        sys.exit(f"build: CMake could not configure llama.cpp with CMAKE_ARGS={shlex.join(args)!r}")


def main() -> None:
    flags = resolve_cmake_args()
    args = shlex.split(flags)
    if "--print-bin-dir" in sys.argv:
        print(tools_dir(BASE_CMAKE_ARGS + args))
        return
    if "CMAKE_ARGS" not in os.environ and flags:
        print(f"build: CMAKE_ARGS={flags!r} as remembered in {FLAGS_FILE} (CMAKE_ARGS= builds for the CPU)")
    targets = LIBRARY_TARGETS + (TOOL_TARGETS if "--tools" in sys.argv else [])
    args = BASE_CMAKE_ARGS + args
    with fetch.cache_lock():
        fetch.fill()
        sync_cmakelists()
        bin_dir = build(targets, args)
        dest = Path(sys.argv[sys.argv.index("--into") + 1]).absolute() if "--into" in sys.argv else LIB_DEST
        install_libraries(bin_dir, flags, dest)
        # A wheel may be installed on any machine: there the probe runs on first use.
        faulted = [] if "--into" in sys.argv else probe_cpu(dest)
        if "--tools" in sys.argv:
            link_tools(bin_dir, tools_dir(args), faulted)


if __name__ == "__main__":
    main()
