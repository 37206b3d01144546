"""Fill the cached llama.cpp tree from the pinned llama-cpp-python sdist, and link vendor/llama.cpp to it.

llama-cpp-python's source distribution carries a llama.cpp tree under
vendor/llama.cpp. We take that tree, and only that tree, so our pin is one
archive with one sha256. Both live in the per-machine helios cache:

  $HELIOS_CACHE/downloads/<sdist>.tar.gz           the archive, sha256-checked
  $HELIOS_CACHE/src/<pin key>/vendor/llama.cpp/    the extracted tree
  $HELIOS_CACHE/src/<pin key>/CMakeLists.txt       copied in by build.py

vendor/llama.cpp in each clone is a symlink to the cached tree, so every
clone on the machine reads (and builds) the same files, and the CMake build
never refers to where a clone sits. The link is git-ignored and never
committed; a moved or emptied cache is refilled and relinked on the next run.

Usage: python vendor/fetch.py [--force]     --force re-extracts the cached tree
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Upstream llama.cpp commit that this sdist carries (for humans; the sha256 is the pin).
LLAMA_CPP_COMMIT = "0c1e570"
# Names the cached source folder: readable, and changes whenever the pin does.
PIN_KEY = f"{SDIST_FILE.removesuffix('.tar.gz')}-{SDIST_SHA256[:12]}"

VENDOR_DIR = Path(__file__).resolve().parent
TARGET = VENDOR_DIR / "llama.cpp"
STAMP_NAME = ".helios-pin"


def cache_root() -> Path:
    """The per-machine helios cache: $HELIOS_CACHE, else ~/.cache/helios."""
    return Path(os.environ.get("HELIOS_CACHE") or Path.home() / ".cache" / "helios").expanduser().absolute()


def cache_dir() -> Path:
    """Where downloaded archives are kept."""
    return cache_root() / "downloads"


def source_dir() -> Path:
    """The stable CMake source folder of this pin: the same for every clone on the machine."""
    return cache_root() / "src" / PIN_KEY


def cached_tree() -> Path:
    """The extracted llama.cpp tree inside source_dir(); vendor/llama.cpp links here."""
    return source_dir() / "vendor" / "llama.cpp"


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Hold the machine-wide cache lock, so clones set up at the same time take turns."""
    path = cache_root() / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"fetch: waiting for another set-up on this machine ({path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def fill(force: bool = False) -> bool:
    """Extract the pinned tree into the cache on a miss, and point vendor/llama.cpp at it.

    Returns whether anything was extracted. Call it under cache_lock().
    """
    tree = cached_tree()
    extracted = force or not _is_pinned(tree)
    if extracted:
        _extract_llama_cpp(download_sdist(), tree)
    _link_vendor(tree)
    return extracted


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist() -> Path:
    """Return the pinned archive from the cache, downloading it on a miss."""
    archive = cache_dir() / SDIST_FILE
    if archive.exists() and sha256_of(archive) == SDIST_SHA256:
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{SDIST_NAME}=={SDIST_VERSION}",
                "-d",
                tmp,
            ],
            check=True,
        )
        fetched = Path(tmp) / SDIST_FILE
        actual = sha256_of(fetched)
        if actual != SDIST_SHA256:
            sys.exit(f"fetch: {SDIST_FILE} has sha256 {actual}, pinned {SDIST_SHA256}; refusing it")
        fetched.replace(archive)
    return archive


def _is_pinned(tree: Path) -> bool:
    stamp = tree / STAMP_NAME
    return stamp.is_file() and stamp.read_text().strip() == SDIST_SHA256


def _extract_llama_cpp(archive: Path, dest: Path) -> None:
    """Extract <sdist>/vendor/llama.cpp/** into dest, nothing else; dest appears whole or not at all."""
    prefix = f"{SDIST_FILE.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".llama.cpp-"))
    try:
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                if not member.name.startswith(prefix) or member.name == prefix:
                    continue
                member.name = member.name[len(prefix) :]
                members.append(member)
            tar.extractall(staging, members=members, filter="data")
        (staging / STAMP_NAME).write_text(SDIST_SHA256 + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        if dest.exists():
            # A directory cannot be renamed over a non-empty one: move the old tree aside first.
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".llama.cpp-old-"))
            dest.replace(old / "llama.cpp")
            shutil.rmtree(old, ignore_errors=True)
        staging.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"fetch: {dest} filled from {SDIST_FILE} (llama.cpp {LLAMA_CPP_COMMIT})")


def _link_vendor(tree: Path) -> None:
    """Make vendor/llama.cpp a symlink to tree, replacing an older link or extracted copy."""
    if TARGET.is_symlink() and os.readlink(TARGET) == str(tree):
        return
    link = VENDOR_DIR / f".llama.cpp-link-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(tree, target_is_directory=True)
    if TARGET.is_dir() and not TARGET.is_symlink():
        # An extraction from before the cache held the tree. Renaming it aside and the
        # link in leaves vendor/llama.cpp missing only between two renames.
        old = VENDOR_DIR / f".llama.cpp-old-{os.getpid()}"
        TARGET.replace(old)
        link.replace(TARGET)
        shutil.rmtree(old, ignore_errors=True)
    else:
        link.replace(TARGET)
    print(f"fetch: vendor/llama.cpp -> {tree}")


def main() -> None:
    with cache_lock():
        fill(force="--force" in sys.argv[1:])


if __name__ == "__main__":
    main()
