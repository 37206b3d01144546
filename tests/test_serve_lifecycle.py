"""`helios-engine serve` starting and stopping: broken model files, absurd options, SIGTERM's drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading

import httpx
import pytest

from helios_core.resolve import default_model_path
from tests.server_process import PATIENCE, ServerProcess, no_eog

# --- model files that cannot load ---------------------------------------------------------------


def gguf_header(path) -> bytes:
    """The first 8 MiB of a GGUF: b"GGUF", u32 version, u64 tensor count, u64 kv count, then the kvs."""
    with open(path, "rb") as f:
        return f.read(8 << 20)


def broken_models(directory) -> dict[str, str]:
    """Copies of the default model damaged in the ways a download or a disk can damage them."""
    source = default_model_path()
    head = gguf_header(source)
    key_length = struct.unpack_from("<Q", head, 24)[0]
    assert head[32 : 32 + key_length] == b"general.architecture"  # the layout the damage below relies on
    with open(source, "rb") as f:
        first_100_mb = f.read(100 << 20)
    damaged = {
        "truncated_to_24_bytes": head[:24],
        "truncated_to_1_mb": head[: 1 << 20],
        "truncated_to_100_mb": first_100_mb,
        "magic_then_random_bytes": b"GGUF" + os.urandom(1 << 16),
        "version_99": head[:4] + struct.pack("<I", 99) + head[8:],
        "tensor_count_2_62": head[:8] + struct.pack("<Q", 2**62) + head[16:],
        "kv_count_2_62": head[:16] + struct.pack("<Q", 2**62) + head[24:],
        "corrupt_key_length": head[:24] + struct.pack("<Q", 2**40) + head[32:],
    }
    paths = {}
    for name, data in damaged.items():
        path = directory / f"{name}.gguf"
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return broken_models(tmp_path_factory.mktemp("broken"))


def test_every_broken_file_raises_model_load_error_without_crashing(broken):
    # One process over all of them: a crash inside llama.cpp shows as a negative exit code.
    script = textwrap.dedent("""
        import json, sys
        from helios_core.errors import ModelLoadError
        from helios_core.model import Model
        outcome = {}
        for name, path in json.loads(sys.argv[1]).items():
            try:
                Model(path).close()
                outcome[name] = "loaded"
            except ModelLoadError as e:
                outcome[name] = "ModelLoadError: " + str(e)
            except Exception as e:
                outcome[name] = type(e).__name__ + ": " + str(e)
        print(json.dumps(outcome))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(broken)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert sorted(outcome) == sorted(broken)
    for name, what in outcome.items():
        assert what.startswith("ModelLoadError: "), f"{name}: {what}"


@pytest.mark.parametrize("name", ["truncated_to_24_bytes", "version_99", "kv_count_2_62", "truncated_to_100_mb"])
def test_serve_exits_1_with_one_line_for_a_model_it_cannot_load(broken, name):
    server = ServerProcess("--model", broken[name], "--ctx-size", "256", wait=False)
    code = server.wait()
    log = server.log()
    assert code == 1, log
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if "failed to load" in line]
    assert len(errors) == 1 and errors[0].startswith("helios-engine: the model failed to load:")
    assert name in errors[0]


def test_a_port_in_use_fails_at_once_without_loading_the_model():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-m", "helios_cli", "serve", "--port", port, "--ctx-size", "256"],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
    assert result.returncode == 3  # uvicorn's start-up failure
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "address already in use" in errors[0]
    assert "Traceback" not in result.stderr and "serving" not in result.stderr


# --- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        ["--parallel", "0"],
        ["--ctx-size", "-5"],
        ["--ctx-size", "0"],
        ["--max-queue", "0"],
        ["--port", "70000"],
        ["--port", "eighty"],
        ["--threads", "0"],
        ["--max-body-mb", "0"],
        ["--request-timeout", "-1"],
        ["--max-connections", "0"],
        ["--shutdown-grace", "-1"],
    ],
)
def test_absurd_options_exit_2_with_one_line(option):
    result = subprocess.run(
        [sys.executable, "-m", "helios_cli", "serve", *option],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("helios-engine serve: error: argument " + option[0])


# --- SIGTERM -----------------------------------------------------------------------------------------


class Stream:
    """A streamed completion read on its own thread; `started` is set by its first chunk."""

    def __init__(self, url: str, body: dict):
        self.status = 0
        self.lines: list[str] = []
        self.started = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._read, args=(url, {**body, "stream": True}), daemon=True)
        self.thread.start()

    def _read(self, url, body):
        try:
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=PATIENCE) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.started.set()
        except Exception as e:  # shown by the assertions on `lines`
            self.error = e
        self.started.set()

    def finish(self) -> None:
        self.thread.join(PATIENCE)
        assert self.error is None, self.error

    def events(self) -> list[dict]:
        self.finish()
        assert self.status == 200 and self.lines[-1] == "data: [DONE]"
        return [json.loads(line.removeprefix("data: ")) for line in self.lines[:-1]]


def test_sigterm_ends_a_running_stream_at_the_grace_and_exits_0_without_a_traceback():
    # The drain's rules are tests/test_drain.py's, on a scripted engine; this is the process around them:
    # the signal, uvicorn's shutdown after the drain (no handler cancelled), the exit code.
    endless = {"prompt": "Tell an endless story:", "max_tokens": 4000, "temperature": 0.0, "speculative": False}
    with ServerProcess("--ctx-size", "4096", "--parallel", "1", "--shutdown-grace", "0.25") as server:
        stream = Stream(server.url, {**endless, "logit_bias": no_eog()})
        stream.started.wait(PATIENCE)
        server.process.send_signal(signal.SIGTERM)
        cut = stream.events()
        assert cut[-1]["error"]["code"] == "shutting_down" and len(cut) > 1
        assert server.wait() == 0
        log = server.log()
    assert "Traceback" not in log and "Cancel" not in log
