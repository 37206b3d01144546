"""Build llama.cpp's shared libraries in the per-machine cache, then install them into helios_core/lib.

CMake configures from the cached source folder (fetch.source_dir(): the
pinned llama.cpp tree plus a copy of our CMakeLists.txt), never from a
clone, and builds into $HELIOS_CACHE/build/<key>, keyed by that folder, the
machine and the CMake flags. So every clone on the machine, wherever it sits
and wherever earlier clones sat, shares one build, and a fresh clone
compiles nothing. The libraries are copied into helios_core/lib, where
helios_core looks first (HELIOS_LIB_DIR overrides).

CMake flags: CMAKE_ARGS from the environment when it is set, even empty;
else the flags the libraries in helios_core/lib were built with (kept there
in cmake-args); else none. So after `make build CMAKE_ARGS=-DGGML_CUDA=ON`
a plain `make serve` keeps the CUDA libraries, and `make build CMAKE_ARGS=`
goes back to the CPU ones.

Usage:
  python vendor/build.py                  libllama + ggml
  python vendor/build.py --tools          also llama-bench and llama-server
  CMAKE_ARGS="-DGGML_CUDA=ON" python vendor/build.py
  python vendor/build.py --print-bin-dir  where the tools are
"""

from __future__ import annotations

import filecmp
import hashlib
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
LIBRARY_TARGETS = ["llama"]
# What helios_core loads: libllama and the ggml libraries it links (not the tools' own).
LIBRARY_GLOBS = ["libllama.so*", "libggml*.so*", "libllama*.dylib", "libggml*.dylib"]
TOOL_TARGETS = ["llama-bench", "llama-server", "llama-perplexity"]


def resolve_cmake_args(environ: Mapping[str, str] = os.environ, remembered: Path = FLAGS_FILE) -> str:
    """CMAKE_ARGS if set (an empty value means the plain CPU build), else the remembered flags, else ""."""
    if "CMAKE_ARGS" in environ:
        return environ["CMAKE_ARGS"]
    try:
        return remembered.read_text().strip()
    except FileNotFoundError:
        return ""


def cmake_args() -> list[str]:
    return shlex.split(resolve_cmake_args())


def build_dir(args: list[str] | None = None) -> Path:
    """The cached build folder for these flags (default: the resolved ones); the same from every clone."""
    args = cmake_args() if args is None else args
    key = hashlib.sha256("\0".join([str(fetch.source_dir()), os.uname().machine, *args]).encode()).hexdigest()[:16]
    return fetch.cache_root() / "build" / key


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


def install_libraries(bin_dir: Path, flags: str) -> None:
    """Copy libllama and ggml (symlinks kept) into helios_core/lib and record the flags they were built with.

    Each file is swapped in with a rename, never rewritten in place, so a process
    that has the old libraries loaded keeps running and one starting now never
    finds a library missing; unchanged files are left alone.
    """
    LIB_DEST.mkdir(parents=True, exist_ok=True)
    built = {path for pattern in LIBRARY_GLOBS for path in bin_dir.glob(pattern)}
    # Real files first, so a link never points at a file that is not there yet.
    for lib in sorted(built, key=lambda path: (path.is_symlink(), path.name)):
        dest = LIB_DEST / lib.name
        staging = LIB_DEST / f".{lib.name}.{os.getpid()}"
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
    for old in LIB_DEST.glob("lib*"):
        if old.name not in names:
            old.unlink()
    if not FLAGS_FILE.is_file() or FLAGS_FILE.read_text() != flags + "\n":
        staging = FLAGS_FILE.with_name(f".{FLAGS_FILE.name}.{os.getpid()}")
        staging.write_text(flags + "\n")
        staging.replace(FLAGS_FILE)


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
        print(build_dir(args) / "bin")
        return
    if "CMAKE_ARGS" not in os.environ and flags:
        print(f"build: CMAKE_ARGS={flags!r} as remembered in {FLAGS_FILE} (CMAKE_ARGS= builds for the CPU)")
    targets = LIBRARY_TARGETS + (TOOL_TARGETS if "--tools" in sys.argv else [])
    with fetch.cache_lock():
        fetch.fill()
        sync_cmakelists()
        install_libraries(build(targets, args), flags)


if __name__ == "__main__":
    main()
