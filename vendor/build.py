"""Build llama.cpp's shared libraries into a per-machine cache.

The build folder lives under the helios cache, keyed by the pinned archive
and the CMake flags, so a second set-up (or a fresh clone on the same
machine) rebuilds nothing. The libraries are then copied into
helios_core/lib, where helios_core looks first (HELIOS_LIB_DIR overrides).

Usage:
  python vendor/build.py                 libllama + ggml
  python vendor/build.py --tools         also llama-bench and llama-server
  CMAKE_ARGS="-DGGML_CUDA=ON" python vendor/build.py
  python vendor/build.py --print-bin-dir where the tools are
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import fetch

ROOT = fetch.VENDOR_DIR.parent
LIB_DEST = ROOT / "helios_core" / "lib"
LIBRARY_TARGETS = ["llama"]
# What helios_core loads: libllama and the ggml libraries it links (not the tools' own).
LIBRARY_GLOBS = ["libllama.so*", "libggml*.so*", "libllama*.dylib", "libggml*.dylib"]
TOOL_TARGETS = ["llama-bench", "llama-server"]


def cmake_args() -> list[str]:
    return shlex.split(os.environ.get("CMAKE_ARGS", ""))


def build_dir() -> Path:
    key = hashlib.sha256(
        "\0".join([fetch.SDIST_SHA256, os.uname().machine, *cmake_args()]).encode()
    ).hexdigest()[:16]
    return fetch.cache_dir().parent / "build" / key


def cmake() -> str:
    # Prefer the cmake that our own dependencies installed beside this Python.
    beside = Path(sys.executable).parent / "cmake"
    return str(beside) if beside.exists() else shutil.which("cmake") or "cmake"


def build(targets: list[str]) -> Path:
    out = build_dir()
    if not (out / "CMakeCache.txt").exists():
        subprocess.run(
            [cmake(), "-S", str(ROOT), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", *cmake_args()],
            check=True, stdout=subprocess.DEVNULL,
        )
    jobs = str(os.cpu_count() or 2)
    subprocess.run([cmake(), "--build", str(out), "-j", jobs, "--target", *targets], check=True)
    return out / "bin"


def install_libraries(bin_dir: Path) -> None:
    """Copy libllama and ggml (symlinks kept) into helios_core/lib, replacing what was there."""
    LIB_DEST.mkdir(parents=True, exist_ok=True)
    for old in LIB_DEST.glob("lib*"):
        old.unlink()
    for lib in sorted({path for pattern in LIBRARY_GLOBS for path in bin_dir.glob(pattern)}):
        if lib.is_symlink():
            (LIB_DEST / lib.name).symlink_to(os.readlink(lib))
        else:
            shutil.copy2(lib, LIB_DEST / lib.name)


def main() -> None:
    if "--print-bin-dir" in sys.argv:
        print(build_dir() / "bin")
        return
    fetch.main()
    targets = LIBRARY_TARGETS + (TOOL_TARGETS if "--tools" in sys.argv else [])
    install_libraries(build(targets))


if __name__ == "__main__":
    main()
