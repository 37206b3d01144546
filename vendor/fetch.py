"""Fill vendor/llama.cpp from the pinned llama-cpp-python sdist.

llama-cpp-python's source distribution carries a llama.cpp tree under
vendor/llama.cpp. We take that tree, and only that tree, so our pin is one
archive with one sha256. The archive is downloaded once per machine into
the helios cache; the extracted tree is git-ignored and never committed.

Usage: python vendor/fetch.py [--force]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Upstream llama.cpp commit that this sdist carries (for humans; the sha256 is the pin).
LLAMA_CPP_COMMIT = "0c1e570"

VENDOR_DIR = Path(__file__).resolve().parent
TARGET = VENDOR_DIR / "llama.cpp"
STAMP = TARGET / ".helios-pin"


def cache_dir() -> Path:
    root = os.environ.get("HELIOS_CACHE") or Path.home() / ".cache" / "helios"
    return Path(root) / "downloads"


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
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"{SDIST_NAME}=={SDIST_VERSION}", "-d", tmp],
            check=True,
        )
        fetched = Path(tmp) / SDIST_FILE
        actual = sha256_of(fetched)
        if actual != SDIST_SHA256:
            sys.exit(f"fetch: {SDIST_FILE} has sha256 {actual}, pinned {SDIST_SHA256}; refusing it")
        fetched.replace(archive)
    return archive


def extract_llama_cpp(archive: Path) -> None:
    """Extract <sdist>/vendor/llama.cpp/** into vendor/llama.cpp, nothing else."""
    prefix = f"{SDIST_FILE.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    staging = Path(tempfile.mkdtemp(dir=VENDOR_DIR, prefix=".llama.cpp-"))
    try:
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                if not member.name.startswith(prefix) or member.name == prefix:
                    continue
                member.name = member.name[len(prefix):]
                members.append(member)
            tar.extractall(staging, members=members, filter="data")
        (staging / STAMP.name).write_text(SDIST_SHA256 + "\n")
        if TARGET.exists():
            shutil.rmtree(TARGET)
        staging.replace(TARGET)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> None:
    force = "--force" in sys.argv[1:]
    if not force and STAMP.exists() and STAMP.read_text().strip() == SDIST_SHA256:
        return
    extract_llama_cpp(download_sdist())
    print(f"fetch: vendor/llama.cpp filled from {SDIST_FILE} (llama.cpp {LLAMA_CPP_COMMIT})")


if __name__ == "__main__":
    main()
