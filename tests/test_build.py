"""The llama.cpp build: one cached build per machine whatever the clone's path, and remembered CMake flags."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import LLAMA_CPP, ROOT

sys.path.insert(0, str(ROOT / "vendor"))

import build as vendor_build  # noqa: E402
import fetch  # noqa: E402

VENDOR_FILES = ["vendor/fetch.py", "vendor/build.py", "CMakeLists.txt"]


def copy_of_repo(dest: Path) -> Path:
    """The build scripts alone, at another path: what a second clone looks like to them."""
    for name in VENDOR_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def cache_paths(repo: Path, cache: Path) -> list[str]:
    """source_dir(), cached_tree() and build_dir() as a process running repo's scripts sees them."""
    code = (
        "import sys; sys.path.insert(0, 'vendor'); import build, fetch; "
        "print(fetch.source_dir()); print(fetch.cached_tree()); "
        "print(build.build_dir([])); print(build.build_dir(['-DGGML_CUDA=ON']))"
    )
    env = {**os.environ, "HELIOS_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


# --- flags -----------------------------------------------------------------


def test_cmake_args_from_the_environment_win_over_remembered_ones(tmp_path):
    remembered = tmp_path / "cmake-args"
    remembered.write_text("-DGGML_CUDA=ON\n")
    flags = vendor_build.resolve_cmake_args({"CMAKE_ARGS": "-DGGML_NATIVE=OFF"}, remembered)
    assert flags == "-DGGML_NATIVE=OFF"


def test_empty_cmake_args_in_the_environment_mean_the_cpu_build(tmp_path):
    remembered = tmp_path / "cmake-args"
    remembered.write_text("-DGGML_CUDA=ON\n")
    assert vendor_build.resolve_cmake_args({"CMAKE_ARGS": ""}, remembered) == ""


def test_unset_cmake_args_keep_the_flags_the_libraries_were_built_with(tmp_path):
    remembered = tmp_path / "cmake-args"
    remembered.write_text("-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90\n")
    flags = vendor_build.resolve_cmake_args({}, remembered)
    assert flags == "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90"


def test_unset_cmake_args_with_nothing_remembered_mean_the_cpu_build(tmp_path):
    assert vendor_build.resolve_cmake_args({}, tmp_path / "cmake-args") == ""


def test_different_flags_build_in_different_folders():
    assert vendor_build.build_dir([]) != vendor_build.build_dir(["-DGGML_CUDA=ON"])


def test_make_passes_cmake_args_only_when_given():
    # vendor/build.py tells "not given" from "given empty" by whether CMAKE_ARGS is set at all.
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    probe = "import os; print(repr(os.environ.get('CMAKE_ARGS')))"
    makefile = (ROOT / "Makefile").read_text() + f'\nprobe-cmake-args:\n\t@{sys.executable} -c "{probe}"\n'

    def seen(*make_args: str, env_value: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "MAKEFLAGS", "MAKELEVEL")}
        if env_value is not None:
            env["CMAKE_ARGS"] = env_value
        run = [make, "-s", "-f", "-", "probe-cmake-args", *make_args]
        return subprocess.run(run, input=makefile, env=env, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    assert seen() == "None"
    assert seen("CMAKE_ARGS=") == "''"
    assert seen("CMAKE_ARGS=-DGGML_CUDA=ON") == "'-DGGML_CUDA=ON'"
    assert seen(env_value="-DGGML_CUDA=ON") == "'-DGGML_CUDA=ON'"


# --- where things live -----------------------------------------------------


def test_source_and_build_folders_do_not_depend_on_the_clones_path(tmp_path):
    cache = tmp_path / "cache"
    here = cache_paths(ROOT, cache)
    elsewhere = cache_paths(copy_of_repo(tmp_path / "another-clone"), cache)
    assert here == elsewhere
    assert all(Path(path).is_relative_to(cache) for path in here)


def test_the_cached_build_is_configured_from_the_cache_not_from_this_clone():
    out = vendor_build.build_dir()
    configured = vendor_build.configured_source(out)
    if configured is None:
        pytest.skip(f"{out} is not configured (libraries from elsewhere?)")
    assert configured.resolve() == fetch.source_dir().resolve()
    assert configured.resolve().is_relative_to(fetch.cache_root().resolve())
    assert not configured.resolve().is_relative_to(ROOT.resolve())


def test_vendor_llama_cpp_is_a_link_to_the_cached_tree():
    assert LLAMA_CPP.is_symlink()
    assert LLAMA_CPP.resolve() == fetch.cached_tree().resolve()
    assert (LLAMA_CPP / "include" / "llama.h").is_file()


def test_the_cached_cmakelists_is_ours():
    assert (fetch.source_dir() / "CMakeLists.txt").read_bytes() == (ROOT / "CMakeLists.txt").read_bytes()


def test_git_ignores_the_vendor_link():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "vendor/llama.cpp"], cwd=ROOT)
    assert ignored.returncode == 0


# --- installing ------------------------------------------------------------


def fake_build(bin_dir: Path, content: bytes) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "libllama.so.0.5.0").write_bytes(content)
    for link, target in [("libllama.so.0", "libllama.so.0.5.0"), ("libllama.so", "libllama.so.0")]:
        (bin_dir / link).unlink(missing_ok=True)
        (bin_dir / link).symlink_to(target)


def test_install_copies_libraries_keeps_links_and_records_the_flags(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    monkeypatch.setattr(vendor_build, "LIB_DEST", lib)
    monkeypatch.setattr(vendor_build, "FLAGS_FILE", lib / "cmake-args")
    fake_build(tmp_path / "bin", b"cuda build")

    vendor_build.install_libraries(tmp_path / "bin", "-DGGML_CUDA=ON")

    assert (lib / "libllama.so").read_bytes() == b"cuda build"
    assert os.readlink(lib / "libllama.so") == "libllama.so.0"
    assert vendor_build.resolve_cmake_args({}, lib / "cmake-args") == "-DGGML_CUDA=ON"


def test_install_swaps_changed_libraries_and_drops_stale_ones(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    monkeypatch.setattr(vendor_build, "LIB_DEST", lib)
    monkeypatch.setattr(vendor_build, "FLAGS_FILE", lib / "cmake-args")
    fake_build(tmp_path / "bin", b"cuda build")
    (tmp_path / "bin" / "libggml-cuda.so").write_bytes(b"cuda backend")
    vendor_build.install_libraries(tmp_path / "bin", "-DGGML_CUDA=ON")
    before = (lib / "libllama.so.0.5.0").stat().st_ino

    (tmp_path / "bin" / "libggml-cuda.so").unlink()
    fake_build(tmp_path / "bin", b"cpu build")
    vendor_build.install_libraries(tmp_path / "bin", "")

    assert (lib / "libllama.so").read_bytes() == b"cpu build"
    assert (lib / "libllama.so.0.5.0").stat().st_ino != before  # a new file, not rewritten in place
    assert not (lib / "libggml-cuda.so").exists()
    assert sorted(path.name for path in lib.iterdir()) == [
        "cmake-args",
        "libllama.so",
        "libllama.so.0",
        "libllama.so.0.5.0",
    ]
    assert vendor_build.resolve_cmake_args({}, lib / "cmake-args") == ""


def test_a_build_folder_configured_from_another_source_is_configured_afresh(tmp_path, monkeypatch):
    # A tiny project stands in for llama.cpp: configuring it takes a second.
    old_source, new_source, out = tmp_path / "old-src", tmp_path / "new-src", tmp_path / "build"
    for source in (old_source, new_source):
        source.mkdir()
        (source / "CMakeLists.txt").write_text(
            "cmake_minimum_required(VERSION 3.18)\nproject(tiny NONE)\nadd_custom_target(hello)\n"
        )
    monkeypatch.setattr(vendor_build, "build_dir", lambda args=None: out)
    monkeypatch.setattr(fetch, "source_dir", lambda: old_source)
    vendor_build.build(["hello"], [])
    assert vendor_build.configured_source(out) == old_source

    shutil.rmtree(old_source)
    monkeypatch.setattr(fetch, "source_dir", lambda: new_source)
    vendor_build.build(["hello"], [])
    assert vendor_build.configured_source(out) == new_source


def test_a_build_folder_whose_cmake_left_with_another_clones_venv_is_configured_again(tmp_path, monkeypatch):
    source, out = tmp_path / "src", tmp_path / "build"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(tiny NONE)\nadd_custom_target(hello)\n"
    )
    monkeypatch.setattr(vendor_build, "build_dir", lambda args=None: out)
    monkeypatch.setattr(fetch, "source_dir", lambda: source)
    vendor_build.build(["hello"], [])
    # What a clone that configured the build and was then moved away leaves behind:
    # the path of its venv's cmake, written all over the build folder.
    real = vendor_build.cmake_cache(out)["CMAKE_COMMAND"]
    gone = str(tmp_path / "moved-clone" / ".venv" / "bin" / "cmake")
    for path in [out / "CMakeCache.txt", out / "Makefile", *out.rglob("*.make"), *out.rglob("*.cmake")]:
        if path.is_file():
            path.write_text(path.read_text().replace(real, gone))

    vendor_build.build(["hello"], [])

    assert Path(vendor_build.cmake_cache(out)["CMAKE_COMMAND"]).exists()


# --- end to end ------------------------------------------------------------


@pytest.mark.slow
def test_a_second_clone_builds_from_the_warm_cache_after_the_first_moved(tmp_path):
    """Two clones share one cached build; moving the first away breaks nothing and compiles nothing.

    Uses the real cache: cold (minutes) the first time on a machine, seconds after.
    """
    env = {**os.environ, "CMAKE_ARGS": ""}

    def build_in(repo: Path) -> tuple[str, float]:
        start = time.monotonic()
        run = subprocess.run([sys.executable, "vendor/build.py"], cwd=repo, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout, time.monotonic() - start

    clone_a = copy_of_repo(tmp_path / "clone-a")
    build_in(clone_a)
    clone_b = copy_of_repo(tmp_path / "clone-b")
    clone_a.rename(tmp_path / "clone-a-gone")

    output, seconds = build_in(clone_b)

    assert "Building C" not in output
    assert (clone_b / "helios_core" / "lib" / "libllama.so").exists()
    assert (clone_b / "vendor" / "llama.cpp").resolve() == fetch.cached_tree().resolve()
    assert seconds < 120
