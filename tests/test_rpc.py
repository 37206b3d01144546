"""Serving a model split across hosts: llama.cpp's RPC backend, with workers on loopback.

A worker serves one client at a time: the tests whose clients are gone when they end share two
workers, and the test that kills one starts its own.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from benchmarks.harness import RpcWorkers, free_port
from helios_core import rpc
from helios_core.batch import Batch
from helios_core.context import Context
from helios_core.errors import BackendError
from helios_core.model import Model
from tests.conftest import LOGIT_TOLERANCE, ROOT, THREADS, assert_logits_close
from tests.server_process import ServerProcess

PROMPT = "The history of the printing press begins in the fifteenth century, when"


@pytest.fixture(scope="module")
def workers():
    started = RpcWorkers(2)
    yield started
    started.stop()


@pytest.fixture
def own_workers():
    started = RpcWorkers(2)
    yield started
    started.stop()


def teacher_forced(model: Model) -> np.ndarray:
    """Every position's logits of PROMPT, decoded in one batch."""
    with Context(model, n_ctx=256, n_threads=THREADS) as ctx:
        tokens = model.vocab.tokenize(PROMPT)
        batch = Batch(len(tokens))
        batch.set(tokens)
        batch.logits[: len(tokens)] = 1  # every position's logits: teacher forcing
        ctx.decode(batch)
        return np.stack([ctx.logits(i) for i in range(len(tokens))])


# The same decode through workers, in a process of its own: the workers, once added, stay for the process.
_THROUGH_WORKERS = """
import sys
import numpy as np
from helios_core import Model, default_model_path, rpc
from tests.test_rpc import teacher_forced

rpc.add_workers(rpc.parse_endpoints(sys.argv[1]))
with Model(default_model_path(), n_gpu_layers=-1) as model:
    np.save(sys.argv[2], teacher_forced(model))
"""


def test_logits_through_workers_agree_with_local_decoding(workers, tmp_path, model):
    out = tmp_path / "remote.npy"
    subprocess.run([sys.executable, "-c", _THROUGH_WORKERS, workers.spec, str(out)], check=True, timeout=300, cwd=ROOT)
    remote, local = np.load(out), teacher_forced(model)
    # The workers run the same CPU kernels with other thread counts and splits: the batch tolerance holds.
    assert_logits_close(list(remote), list(local), LOGIT_TOLERANCE)


def test_served_fully_offloaded_to_two_workers(workers):
    from openai import OpenAI

    server = ServerProcess("--rpc", workers.spec, "--n-gpu-layers", "-1", "--ctx-size", "256", "--parallel", "2")
    try:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        assert [d["description"] for d in health["devices"] if d["name"].startswith("RPC")] == workers.endpoints
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        completion = client.completions.create(model="m", prompt=PROMPT, max_tokens=8, temperature=0)
        assert completion.choices[0].text and completion.usage.completion_tokens >= 1
        chat = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
        )
        assert chat.choices[0].message.content is not None
        assert 'helios_device_memory_total_bytes{device="RPC1"' in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()


def test_a_worker_lost_mid_stream_ends_the_stream_with_an_error_and_the_server_with_status_1(own_workers):
    server = ServerProcess("--rpc", own_workers.spec, "--n-gpu-layers", "-1", "--ctx-size", "2048", "--parallel", "2")
    try:
        body = {"prompt": PROMPT, "max_tokens": 1500, "ignore_eos": True, "stream": True}
        lines = []
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as reply:
            assert reply.status_code == 200
            for line in reply.iter_lines():
                lines.append(line)
                if len(lines) == 10:  # tokens are flowing: take one worker away
                    own_workers.processes[1].kill()
        events = [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert '"code":"backend_failed"' in events[-2]
        assert server.process.wait(timeout=60) == 1
        log = server.stop()
        assert "helios-engine: llama.cpp stopped: Remote RPC server crashed" in log
    finally:
        server.stop()


def test_an_unreachable_worker_stops_start_up_with_one_line_naming_it():
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "helios_cli", "serve", "--rpc", f"127.0.0.1:{port}", "--n-gpu-layers", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == f"helios-engine: RPC worker 127.0.0.1:{port} is unreachable: Connection refused\n"


@pytest.mark.parametrize("spec", ["", "host", "host:port", "host:0", ":50052", "a:1,b"])
def test_malformed_worker_lists_are_refused(spec):
    with pytest.raises(BackendError):
        rpc.parse_endpoints(spec)
