"""Which of ggml's CPU builds this machine runs, proved by running it.

The libraries carry ggml's CPU backend once per instruction-set level
(libggml-cpu-haswell.so ... libggml-cpu-sapphirerapids.so: GGML_CPU_ALL_VARIANTS),
as llama.cpp's release builds do, so one build serves every x86 machine it
lands on. ggml would load the variant whose features cpuid advertises. But a
CPU can advertise what then faults: a Sapphire Rapids VM advertised AMX in
cpuid, XCR0 and arch_prctl, and ggml's AMX matmul died with SIGILL on its
second call. No feature test predicts that; only running ggml's kernels does.

So a child process loads the best-scoring variant, reads the default model,
and decodes a prompt batch and then single tokens, which runs every matmul
path (the AMX buffer type, repacked weights, plain). If the child dies, the
next variant is proved the same way. The verdict is kept per machine and per
set of libraries under the helios cache, so the probe runs once.

HELIOS_CPU_VARIANT=NAME loads that variant without a probe (e.g. haswell).
HELIOS_CPU_PROBE_FAULT=NAME[,NAME] makes the probe of those variants die
with SIGILL, as a faulting CPU would: the tests' way to exercise the fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helios_core.errors import LibraryNotFoundError
from helios_core.resolve import helios_cache

FORCE_ENV = "HELIOS_CPU_VARIANT"
FAULT_ENV = "HELIOS_CPU_PROBE_FAULT"
PROBE_TIMEOUT_SECONDS = 300
# The children run as `python -c`, not `-m`: helios_core's own imports load this module first.
_CHILD = [sys.executable, "-c", "import sys; from helios_core.cpu_variant import main; main(sys.argv[1:])"]
# A probe child's exit status when it has no model to run: it proved nothing either way.
_NO_MODEL = 3
_PREFIX, _SUFFIX = "libggml-cpu-", ".so"
# What a variant adds over the one below it, for the start-up line (GGML_CPU_ALL_VARIANTS' x86 list).
_HEADLINE = {
    "sapphirerapids": "AMX",
    "zen4": "AVX-512 BF16",
    "cooperlake": "AVX-512 BF16",
    "icelake": "AVX-512 VNNI",
    "cascadelake": "AVX-512 VNNI",
    "cannonlake": "AVX-512 VBMI",
    "skylakex": "AVX-512",
    "alderlake": "AVX-VNNI",
    "haswell": "AVX2",
}


@dataclass
class Verdict:
    """The CPU variant to load, and why: what was skipped on this machine, and the probe's cost."""

    variant: str  # e.g. "zen4"
    path: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (variant, why), best first
    # "probed" (just now), "cached" (an earlier probe), "forced" (HELIOS_CPU_VARIANT), "unproved" (no
    # model to probe with: ggml's own choice by cpuid, not kept, so the next start probes again)
    how: str = "probed"
    seconds: float = 0.0  # the probe's wall time

    def summary(self) -> str:
        """One line for start-up and `doctor`: the path in use, and what faulted."""
        line = f"CPU build: {self.variant}"
        if self.variant in _HEADLINE:
            line += f" ({_HEADLINE[self.variant]})"
        if self.how == "forced":
            return f"{line}, forced by {FORCE_ENV}"
        if self.how == "unproved":
            return f"{line}, chosen by cpuid alone: no model to prove it with"
        if self.skipped:
            faults = "; ".join(f"{_describe(name)} {why}" for name, why in self.skipped)
            return f"{faults} on this machine: using the {self.variant} build"
        return line

    def to_json(self) -> dict:
        return asdict(self)


def variants(lib_dir: Path) -> list[Path]:
    """The CPU variant libraries in lib_dir (none for a build that links its CPU backend)."""
    return sorted(lib_dir.glob(f"{_PREFIX}*{_SUFFIX}"))


def variant_name(path: Path) -> str:
    return path.name[len(_PREFIX) : -len(_SUFFIX)]


def choose(lib_dir: Path, *, reprobe: bool = False, environ=os.environ) -> Verdict:
    """The variant this machine runs: forced, cached, or proved now by child processes.

    Raises LibraryNotFoundError when no variant runs here (or a forced one is missing).
    """
    found = {variant_name(path): path for path in variants(lib_dir)}
    forced = environ.get(FORCE_ENV)
    if forced:
        if forced not in found:
            raise LibraryNotFoundError(
                f"{FORCE_ENV}={forced}, but {lib_dir} holds no {_PREFIX}{forced}{_SUFFIX} "
                f"(it has: {', '.join(found) or 'none'})"
            )
        return Verdict(forced, str(found[forced]), how="forced")
    record = _record_path(lib_dir, found, environ)
    if not reprobe:
        cached = _read(record)
        if cached is not None and cached.variant in found:
            # Kept by content, not place: the same libraries in another folder get the same verdict.
            cached.path, cached.how = str(found[cached.variant]), "cached"
            return cached
    verdict = _probe(lib_dir, found, environ)
    if verdict.how == "unproved":
        return verdict
    record.parent.mkdir(parents=True, exist_ok=True)
    staging = record.with_name(f".{record.name}.{os.getpid()}")
    staging.write_text(json.dumps(verdict.to_json(), indent=1) + "\n")
    staging.replace(record)
    return verdict


# --- the parent's side -------------------------------------------------------------


def _probe(lib_dir: Path, found: dict[str, Path], environ) -> Verdict:
    started = time.monotonic()
    ranked = _rank(lib_dir, environ)
    skipped: list[tuple[str, str]] = []
    for name in ranked:
        why = _run_child(["probe", name], lib_dir, environ)
        if why is None or why == _NO_MODEL:
            how = "probed" if why is None else "unproved"
            return Verdict(name, str(found[name]), skipped, how, round(time.monotonic() - started, 3))
        skipped.append((name, why))
    tried = "; ".join(f"{name}: {why}" for name, why in skipped) or "none supports this CPU"
    raise LibraryNotFoundError(f"no CPU build of ggml in {lib_dir} runs on this machine ({tried})")


def _rank(lib_dir: Path, environ) -> list[str]:
    """The variants this CPU supports by ggml's own scores, best first (asked of a child, like the probes)."""
    result = subprocess.run(
        [*_CHILD, "rank"],
        env=_child_env(lib_dir, environ),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise LibraryNotFoundError(f"ranking the CPU builds in {lib_dir} failed: {_death(result)}")
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    return [name for name, score in sorted(scores.items(), key=lambda item: -item[1]) if score > 0]


def _run_child(args: list[str], lib_dir: Path, environ) -> str | int | None:
    """None when the child proved its variant, _NO_MODEL when it had nothing to prove it with; else why not."""
    try:
        result = subprocess.run(
            [*_CHILD, *args],
            env=_child_env(lib_dir, environ),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return f"did not finish its probe within {PROBE_TIMEOUT_SECONDS} s"
    if result.returncode in (0, _NO_MODEL):
        return result.returncode or None
    return _death(result)


def _death(result: subprocess.CompletedProcess) -> str:
    if result.returncode < 0:
        try:
            return f"died with {signal.Signals(-result.returncode).name}"
        except ValueError:
            return f"died with signal {-result.returncode}"
    last = (result.stderr or "").strip().splitlines()[-1:] or ["no message"]
    return f"failed (exit {result.returncode}: {last[0]})"


def _child_env(lib_dir: Path, environ) -> dict[str, str]:
    env = dict(environ)
    env["HELIOS_LIB_DIR"] = str(lib_dir)
    env.pop(FORCE_ENV, None)
    return env


def _describe(name: str) -> str:
    headline = _HEADLINE.get(name)
    return f"the {name} build ({headline})" if headline else f"the {name} build"


def _record_path(lib_dir: Path, found: dict[str, Path], environ) -> Path:
    """Where the verdict for this machine and these libraries lives: keyed by the CPU and the files."""
    key = hashlib.sha256()
    key.update(_machine_identity(environ).encode())
    for path in [*found.values(), *sorted(lib_dir.glob("libggml-base*"))]:
        stat = path.stat()
        key.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return helios_cache() / "cpu" / f"{key.hexdigest()[:20]}.json"


def _machine_identity(environ) -> str:
    """The CPU as the kernel describes it (model, flags, microcode) and this machine's id.

    An injected fault makes another machine: its verdict never stands for the real one's.
    """
    parts = [os.uname().machine, os.uname().release, environ.get(FAULT_ENV, "")]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name = line.partition(":")[0].strip()
            if name in ("vendor_id", "model name", "cpu family", "model", "stepping", "microcode", "flags"):
                parts.append(line)
                if name == "flags":
                    break  # every core repeats the same lines
    except OSError:
        pass
    try:
        parts.append(Path("/etc/machine-id").read_text().strip())
    except OSError:
        pass
    return "\n".join(parts)


def _read(record: Path) -> Verdict | None:
    try:
        data = json.loads(record.read_text())
        data["skipped"] = [tuple(pair) for pair in data.get("skipped", [])]
        return Verdict(**data)
    except (OSError, ValueError, TypeError):
        return None  # none yet, or unreadable: probe again


# --- the child's side ---------------------------------------------------------------


def _child_rank() -> None:
    import ctypes

    scores = {}
    for path in variants(Path(os.environ["HELIOS_LIB_DIR"])):
        score = ctypes.CDLL(str(path)).ggml_backend_score
        score.restype = ctypes.c_int
        scores[variant_name(path)] = score()
    print(json.dumps(scores))


def _child_probe(name: str) -> None:
    if name in os.environ.get(FAULT_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGILL)  # as a CPU that advertises what it cannot run
    os.environ[FORCE_ENV] = name
    from helios_core.batch import Batch
    from helios_core.context import Context
    from helios_core.errors import HeliosError
    from helios_core.model import Model
    from helios_core.resolve import default_model_path

    try:
        path = default_model_path()
    except HeliosError:
        sys.exit(_NO_MODEL)
    with Model(path) as model, Context(model, n_ctx=256, n_batch=64, n_ubatch=64) as ctx:
        tokens = model.vocab.tokenize("The quick brown fox jumps over the lazy dog. " * 6)[:64]
        batch = Batch(64)
        batch.set(tokens, 0, 0)
        ctx.decode(batch)  # a prompt batch: the matrix-matrix kernels
        for position in range(len(tokens), len(tokens) + 4):  # single tokens: the matrix-vector kernels
            batch.set([int(ctx.logits(batch.n_tokens - 1).argmax())], position, 0)
            ctx.decode(batch)


def main(argv: list[str]) -> None:
    """`rank` and `probe NAME`: the children's work; `choose LIB_DIR`: what vendor/build.py asks after a build."""
    if argv[0] == "rank":
        _child_rank()
    elif argv[0] == "probe":
        _child_probe(argv[1])
    else:
        chosen = choose(Path(argv[1]))
        print(chosen.summary())
        print(json.dumps([name for name, _ in chosen.skipped]))
