"""Shared fixtures and helpers: the default model (loaded once), thread count, logits comparisons.

HELIOS_TEST_THREADS is the CPU thread count of every context, generator and
`helios-engine` process the suite starts, so the whole suite can be run on 1
thread (or any other count) to check it does not depend on it. Unset, it is 2 (at
most the cores), or each pytest-xdist worker's share of the cores (`make test` runs a worker per core).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from helios_core.context import Context
from helios_core.generate import GenerationParams
from helios_core.model import Model
from helios_core.resolve import default_model_path

# Seconds a test waits on something merely slow: it bounds a failure, never a speed claim.
PATIENCE = 300.0

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP = ROOT / "vendor" / "llama.cpp"
VOCAB_MODELS = LLAMA_CPP / "models"


def suite_threads() -> int:
    """HELIOS_TEST_THREADS where given; else 2, or this worker's share of the cores under pytest-xdist.

    Workers must not ask for more threads than there are cores between them:
    llama.cpp's threads spin while they wait for each other, and oversubscribed
    they make a decode several times slower.
    """
    given = os.environ.get("HELIOS_TEST_THREADS")
    if given is not None:
        threads = int(given)
        if threads < 1:
            raise ValueError(f"HELIOS_TEST_THREADS must be a positive thread count, got {threads}")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, cores // workers))


THREADS = suite_threads()

# Most any logit may move when llama.cpp decodes the same tokens in other batch
# shapes (a prompt in one decode or two, a sequence alone or beside others):
# its CPU kernels are not batch-invariant. Measured on the default model on an
# AMD EPYC with AVX-512, at 1 and 2 threads alike: worst 2.33 (a prompt reusing
# 11 cached tokens vs decoded whole), 1.39 (6 cached), 1.14 (4 sequences in one
# batch vs alone); other machines reported 1.0 to 1.3. The bound leaves twice
# the worst seen for other CPUs, and stays far below what a real bug does: one
# stale token in a reused prefix moved logits by 10.8 to 14, a lost prefix by 21+.
LOGIT_TOLERANCE = 5.0


@pytest.fixture(scope="session")
def model() -> Model:
    """The default model (Gemma 3 270M Q4_K_M), shared by the whole session."""
    with Model(default_model_path()) as m:
        yield m


@pytest.fixture
def ctx(model: Model) -> Context:
    """A fresh small context over the default model."""
    with Context(model, n_ctx=1024, n_batch=256, n_threads=THREADS) as c:
        yield c


def eog_bias(vocab) -> dict[int, float]:
    """A logit_bias of -100 on every end-of-generation token: a run then lasts its max_tokens.

    Tests that count tokens use it, so an end-of-generation token that some
    CPU's floats make likely cannot end a run early.
    """
    return {t: -100.0 for t in range(vocab.n_vocab) if vocab.is_eog(t)}


@pytest.fixture(scope="session")
def no_eog(model: Model) -> dict[int, float]:
    """eog_bias of the default model."""
    return eog_bias(model.vocab)


def teacher_forced(script: Sequence[int], captured: list[np.ndarray], **kw) -> GenerationParams:
    """Params that generate exactly `script` and copy every logits row they are given into `captured`.

    Two runs forced along the same tokens see the same inputs, so their logits
    can be compared step by step whatever either run would have sampled.
    """

    return GenerationParams(
        max_tokens=len(script),
        sampler=lambda logits, state: script[state.step],
        processors=[_copy_into(captured)],
        **kw,
    )


def greedy_captured(max_tokens: int, captured: list[np.ndarray], **kw) -> GenerationParams:
    """Greedy params that copy every logits row into `captured` (its tokens then script a teacher-forced run)."""

    return GenerationParams(max_tokens=max_tokens, temperature=0.0, processors=[_copy_into(captured)], **kw)


def _copy_into(captured: list[np.ndarray]):
    """A processor that leaves logits as they are and keeps a copy of each row."""

    def capture(logits, state):
        captured.append(logits.copy())
        return logits

    return capture


def assert_logits_close(
    got: Sequence[np.ndarray], expected: Sequence[np.ndarray], tolerance: float = LOGIT_TOLERANCE
) -> None:
    """Row by row: no logit further than `tolerance` apart, and the same best token where it leads by more
    than twice the tolerance (then no drift within the tolerance can change the choice)."""
    assert len(got) == len(expected) > 0
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        worst = float(np.abs(a - b).max())
        assert worst <= tolerance, f"row {i}: logits differ by up to {worst:.3f}, more than {tolerance}"
        second, first = np.sort(b)[-2:]
        if first - second > 2 * tolerance:
            assert int(a.argmax()) == int(b.argmax()), f"row {i}: the best token changed"


@pytest.fixture(scope="session")
def shared_server():
    """shared_server(*ARGS): a `helios-engine serve ARGS` started at its first use and shared by every
    module asking for the same ARGS, stopped when the session ends (tests/server_process.py)."""
    from tests.server_process import SharedServers  # it imports this module

    servers = SharedServers()
    yield servers.get
    servers.close()
