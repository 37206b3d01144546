"""Object lifetimes: no public call sequence crashes the process; use after close is a HeliosError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helios_core import Batch, Context, GenerationParams, Generator, Model, default_model_path
from helios_core.errors import ClosedError
from tests.conftest import THREADS

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *([code] if code.endswith(".py") else ["-c", code]), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HELIOS_TEST_THREADS": str(THREADS)},  # for tests/lifecycle_machine.py
    )


def assert_no_crash(result: subprocess.CompletedProcess) -> None:
    # A negative return code is a signal: SIGABRT or SIGSEGV from inside llama.cpp.
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_public_calls_in_random_orders_never_crash_the_process():
    assert_no_crash(run_python(str(ROOT / "tests" / "lifecycle_machine.py"), "25"))


def test_everything_made_from_a_closed_model_refuses_use():
    model = Model(default_model_path())
    ctx = Context(model, n_ctx=256, n_batch=32, n_threads=THREADS)
    generator = Generator(model, n_ctx=256, n_threads=THREADS)
    vocab = model.vocab
    model.close()
    assert ctx.closed and generator.ctx.closed
    for call in (
        lambda: vocab.tokenize("hi"),
        lambda: vocab.is_eog(1),
        lambda: vocab.token_to_piece(5),
        lambda: vocab.detokenize([5]),
        lambda: ctx.decode(Batch(1)),
        lambda: ctx.logits(),
        lambda: ctx.seq_rm(0),
        lambda: generator.generate("hi"),
        lambda: model.description,
    ):
        with pytest.raises(ClosedError, match="closed"):
            call()


def test_a_generator_frees_the_context_it_made_and_not_one_it_was_given(model):
    with Generator(model, n_ctx=256, n_threads=THREADS) as own:
        assert own.generate("Hi", GenerationParams(max_tokens=1, temperature=0)).usage.prompt_tokens > 0
    assert own.ctx.closed
    with pytest.raises(ClosedError, match="generator is closed"):
        own.generate("Hi")
    with Context(model, n_ctx=256, n_batch=32, n_threads=THREADS) as ctx:
        with Generator(model, ctx):
            pass
        assert not ctx.closed


def test_a_logits_view_stays_readable_after_its_context_and_model_close():
    code = textwrap.dedent("""
        from helios_core import Batch, Context, Model, default_model_path
        model = Model(default_model_path())
        ctx = Context(model, n_ctx=256, n_batch=32, n_threads=THREADS)
        batch = Batch(32)
        batch.set(model.vocab.tokenize("The capital of France is"))
        ctx.decode(batch)
        view = ctx.logits(-1)
        before = float(view.sum())
        ctx.close()
        model.close()
        assert float(view.sum()) == before
        print("ok")
    """).replace("THREADS", str(THREADS))
    result = run_python(code)
    assert_no_crash(result)
    assert result.stdout.strip() == "ok"


def test_closing_everything_while_the_engine_thread_is_inside_a_step_does_not_crash():
    # The sampler holds the engine thread inside a step, past close()'s join
    # timeout; context and model are closed under it, then it goes on.
    code = textwrap.dedent("""
        import threading
        from helios_core import Context, GenerationParams, Model, default_model_path
        from helios_core.engine import Done, Engine
        from helios_core.errors import HeliosError

        model = Model(default_model_path())
        ctx = Context(model, n_ctx=256, n_batch=32, n_threads=THREADS)
        engine = Engine(ctx)
        inside, release, done = threading.Event(), threading.Event(), threading.Event()
        events = []

        def held(logits, state):
            inside.set()
            release.wait()
            return 5

        def sink(event):
            events.append(event)
            if isinstance(event, Done):
                done.set()

        engine.submit(model.vocab.tokenize("Hello"), GenerationParams(max_tokens=50, sampler=held), sink)
        assert inside.wait(60)
        engine.close(timeout=0.1)  # the thread is still inside the step
        ctx.close()
        model.close()
        release.set()
        assert done.wait(60)
        assert isinstance(events[-1].error, HeliosError), events[-1]  # shut down, or its model closed
        print("ok")
    """).replace("THREADS", str(THREADS))
    result = run_python(code)
    assert_no_crash(result)
    assert result.stdout.strip() == "ok"


def test_help_works_without_a_built_library(tmp_path):
    env = {**os.environ, "HELIOS_LIB_DIR": str(tmp_path)}
    for args in (["--help"], ["serve", "--help"], ["generate", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "helios_cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and "usage: helios-engine" in result.stdout, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "helios_cli", "generate", "--prompt", "hi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "libllama not found" in result.stderr and "Traceback" not in result.stderr


def test_the_generate_command_frees_what_it_made_when_it_fails(monkeypatch, capsys):
    from helios_cli import main as cli
    from helios_core.generate import Generator as RealGenerator
    from helios_core.model import Model as RealModel

    closed = []
    for cls in (RealModel, RealGenerator):
        original = cls.close
        monkeypatch.setattr(cls, "close", lambda self, original=original: (closed.append(self), original(self))[1])
    with pytest.raises(SystemExit) as exit_info:  # a prompt longer than the context fails after both are made
        cli.main(["generate", "--prompt", "word " * 400, "--ctx-size", "256", "--threads", str(THREADS)])
    assert exit_info.value.code == 2 and "the prompt has" in capsys.readouterr().err
    model = next(c for c in closed if isinstance(c, RealModel))
    generator = next(c for c in closed if isinstance(c, RealGenerator))
    assert model.closed and generator.ctx.closed
