"""Which of ggml's CPU variants this machine runs: proved by running them, with faults injected where a test needs one.

Nothing here assumes the machine has AMX or lacks it: the tests take whatever the real probe
chose here, then make that variant fault (HELIOS_CPU_PROBE_FAULT kills its probe with SIGILL, as
a CPU that advertises what it cannot run does) and check what happens next.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helios_core import _llama, cpu_variant
from helios_core.errors import LibraryNotFoundError
from tests.conftest import ROOT, THREADS

sys.path.insert(0, str(ROOT / "vendor"))

import build as vendor_build  # noqa: E402

LIB_DIR = _llama.lib_dir()
NAMES = [cpu_variant.variant_name(path) for path in cpu_variant.variants(LIB_DIR)]

needs_variants = pytest.mark.skipif(not NAMES, reason="this build links its CPU backend: no variants to choose")


def faulting(*names: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != cpu_variant.FORCE_ENV}
    env[cpu_variant.FAULT_ENV] = ",".join(names)
    return env


@pytest.fixture(scope="module")
def proved() -> cpu_variant.Verdict:
    """The real probe on this machine, run afresh."""
    return cpu_variant.choose(LIB_DIR, reprobe=True, environ=faulting())


@needs_variants
def test_the_probe_proves_a_variant_this_machine_runs(proved):
    assert proved.how == "probed"
    assert proved.variant in NAMES
    assert Path(proved.path) == LIB_DIR / f"libggml-cpu-{proved.variant}.so"
    assert proved.seconds > 0
    # Where a better variant faulted on this machine, it says so: never silently.
    assert all(why.startswith(("died with", "failed", "did not finish")) for _, why in proved.skipped)


@needs_variants
def test_a_variant_that_dies_with_sigill_gives_way_to_the_next_best(proved):
    verdict = cpu_variant.choose(LIB_DIR, reprobe=True, environ=faulting(proved.variant))
    assert verdict.variant != proved.variant
    assert (proved.variant, "died with SIGILL") in verdict.skipped
    assert f"the {proved.variant} build" in verdict.summary()
    assert verdict.summary().endswith(f"on this machine: using the {verdict.variant} build")


@needs_variants
def test_a_verdict_is_kept_and_read_back_without_a_probe(proved):
    first = cpu_variant.choose(LIB_DIR, environ=faulting(proved.variant))
    again = cpu_variant.choose(LIB_DIR, environ=faulting(proved.variant))
    assert again.how == "cached"
    assert (again.variant, again.skipped) == (first.variant, first.skipped)


@needs_variants
def test_no_variant_that_runs_is_one_clear_error(tmp_path, proved):
    # Two variants, both faulting, stand for all of them: each probe costs a process.
    for path in LIB_DIR.iterdir():
        if path.name.startswith("lib") and (path.name not in {p.name for p in cpu_variant.variants(LIB_DIR)}):
            (tmp_path / path.name).symlink_to(path)
    for name in {"x64", proved.variant}:
        (tmp_path / f"libggml-cpu-{name}.so").symlink_to(LIB_DIR / f"libggml-cpu-{name}.so")
    with pytest.raises(LibraryNotFoundError, match="no CPU build of ggml .* runs on this machine .*died with SIGILL"):
        cpu_variant.choose(tmp_path, reprobe=True, environ=faulting("x64", proved.variant))


@needs_variants
def test_a_forced_variant_is_loaded_without_a_probe():
    verdict = cpu_variant.choose(LIB_DIR, environ={**faulting(*NAMES), cpu_variant.FORCE_ENV: NAMES[0]})
    assert (verdict.variant, verdict.how) == (NAMES[0], "forced")


@needs_variants
def test_a_forced_variant_that_is_not_built_is_an_error():
    with pytest.raises(LibraryNotFoundError, match="HELIOS_CPU_VARIANT=pentium4, but .* holds no"):
        cpu_variant.choose(LIB_DIR, environ={cpu_variant.FORCE_ENV: "pentium4"})


@needs_variants
def test_generate_says_in_one_line_which_variant_faulted_and_still_runs(proved):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "helios_cli",
            "generate",
            "--prompt",
            "The sky is",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--threads",
            str(THREADS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=faulting(proved.variant),
    )
    assert result.returncode == 0, result.stderr
    assert f"the {proved.variant} build" in result.stderr
    assert "died with SIGILL on this machine: using the" in result.stderr


def test_doctor_names_the_cpu_path():
    result = subprocess.run([sys.executable, "-m", "helios_cli", "doctor"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("helios-engine ")
    assert ("CPU build: " in result.stdout) or ("CPU backend: linked into the build" in result.stdout)
    assert "device CPU" in result.stdout


def test_the_tools_folder_leaves_out_the_variants_that_faulted(tmp_path):
    bin_dir, tools = tmp_path / "bin", tmp_path / "tools"
    bin_dir.mkdir()
    for name in ["llama-server", "libggml-base.so", "libggml-cpu-haswell.so", "libggml-cpu-sapphirerapids.so"]:
        (bin_dir / name).write_bytes(name.encode())
    (bin_dir / "libllama.so").symlink_to("libllama.so.0")
    vendor_build.link_tools(bin_dir, tools, faulted=["sapphirerapids"])
    assert sorted(p.name for p in tools.iterdir()) == [
        "libggml-base.so",
        "libggml-cpu-haswell.so",
        "libllama.so",
        "llama-server",
    ]
    assert os.path.samefile(tools / "llama-server", bin_dir / "llama-server")  # linked, not copied
    assert os.readlink(tools / "libllama.so") == "libllama.so.0"
    # A verdict that changes (the variant works after all) brings it back; one that faults now goes.
    vendor_build.link_tools(bin_dir, tools, faulted=["haswell"])
    assert sorted(p.name for p in tools.iterdir()) == [
        "libggml-base.so",
        "libggml-cpu-sapphirerapids.so",
        "libllama.so",
        "llama-server",
    ]
