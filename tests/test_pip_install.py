"""pip's route, end to end: an sdist into a fresh venv, then `helios-engine generate`.

Slow (a venv, every dependency, a wheel build through the cached llama.cpp build): `pytest -m slow`.
"""

from __future__ import annotations

import subprocess
import tarfile
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT, THREADS

pytestmark = pytest.mark.slow


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=1800, **kwargs)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist, made the way a release makes it: PyPA's `build`, from a venv of its own
    (installed beside our own vendor/build.py, the package's name would shadow it for linters)."""
    where = tmp_path_factory.mktemp("sdist")
    venv.create(where / "venv", with_pip=True)
    python = str(where / "venv" / "bin" / "python")
    run(python, "-m", "pip", "install", "--quiet", "build")
    run(python, "-m", "build", "--sdist", "--outdir", str(where / "dist"), str(ROOT))
    (made,) = (where / "dist").glob("helios_engine-*.tar.gz")
    return made


def test_the_sdist_carries_our_code_and_the_pin_but_no_llama_cpp_and_no_library(sdist):
    names = tarfile.open(sdist).getnames()
    assert any(name.endswith("/vendor/fetch.py") for name in names)
    assert any(name.endswith("/vendor/build.py") for name in names)
    assert any(name.endswith("/CMakeLists.txt") for name in names)
    assert any(name.endswith("/helios_core/cpu_variant.py") for name in names)
    assert not any("/vendor/llama.cpp" in name for name in names)
    assert not any(name.endswith((".so", ".dylib")) or ".so." in name for name in names)


def test_an_sdist_installed_into_a_fresh_venv_generates(sdist, tmp_path):
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    run(str(python), "-m", "pip", "install", "--quiet", str(sdist))
    libs = run(str(python), "-c", "from helios_core import _llama; print(_llama.lib_dir())", cwd=tmp_path).stdout
    assert "site-packages" in libs  # the wheel's own libraries, not a checkout's
    result = run(
        str(tmp_path / "venv" / "bin" / "helios-engine"),
        "generate",
        "--prompt",
        "hi",
        "--max-tokens",
        "4",
        "--threads",
        str(THREADS),
        cwd=tmp_path,
    )
    assert "generated" in result.stderr
