"""Bounded resources over real loopback HTTP: body size, slow clients, over-long prompts, the connection cap.

The server here takes bodies of at most 1 MiB and gives clients 2 s for
headers and 2 s for a body: those are the behaviours under test. Every wait
is for an event (a closed socket, a metric) with a deadline that only
bounds a failure.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.server_process import (
    ServerProcess,
    connect,
    metric,
    parse_response,
    read_until_closed,
    wait_until,
)

CTX = 512
REQUEST_TIMEOUT = 1
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def server():
    with ServerProcess(
        "--ctx-size", str(CTX), "--parallel", "1", "--max-body-mb", "1", "--request-timeout", str(REQUEST_TIMEOUT)
    ) as proc:
        yield proc


def assert_openai_error(body: bytes, code: str) -> dict:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    return error


def raw_post_head(path: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()


# --- body size ---------------------------------------------------------------------------


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(server):
    sock = connect(server.port)
    sock.sendall(raw_post_head("/v1/completions", 50 << 20))  # 50 MiB announced, not one byte sent
    status, headers, body = parse_response(read_until_closed(sock))
    assert status == 413 and headers["connection"] == "close"
    assert "1 MiB" in assert_openai_error(body, "request_too_large")["message"]


def test_a_chunked_body_is_refused_as_it_passes_the_limit(server):
    sock = connect(server.port)
    sock.sendall(raw_post_head("/v1/completions", None))
    chunk = b"x" * 65536
    for _ in range(MAX_BODY // len(chunk) + 1):  # just over the limit, and the body never ends
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    status, headers, body = parse_response(read_until_closed(sock))
    assert status == 413 and headers["connection"] == "close"
    assert_openai_error(body, "request_too_large")


def test_an_ordinary_client_sending_too_much_reads_the_413(server):
    r = httpx.post(f"{server.url}/v1/completions", content=b'{"prompt": "' + b"a" * (3 << 20) + b'"}', timeout=120)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_body_under_the_limit_is_served(server):
    r = httpx.post(f"{server.url}/tokenize", json={"content": "word " * 200_000}, timeout=120)  # 0.95 MiB
    assert r.status_code == 200 and len(r.json()["tokens"]) >= 200_000


# --- prompts too long for a slot ------------------------------------------------------------


def test_a_prompt_too_long_by_its_size_alone_is_refused_early(server):
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": "word " * 180_000, "max_tokens": 1}, timeout=120)
    assert r.status_code == 400
    error = assert_openai_error(r.content, "context_length_exceeded")
    assert error["param"] == "prompt"
    assert "at least" in error["message"] and f"holds {CTX}" in error["message"]


def test_a_chat_too_long_by_its_size_alone_names_messages(server):
    messages = [{"role": "user", "content": "word " * 180_000}]
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": messages}, timeout=120)
    assert r.status_code == 400
    assert assert_openai_error(r.content, "context_length_exceeded")["param"] == "messages"


def test_token_ids_too_many_for_a_slot_are_refused(server):
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": [10] * CTX, "max_tokens": 1}, timeout=120)
    assert r.status_code == 400
    assert f"the prompt has {CTX} tokens" in assert_openai_error(r.content, "context_length_exceeded")["message"]


# --- slow clients ------------------------------------------------------------------------------


def test_headers_sent_too_slowly_get_a_408_and_the_connection_closes(server):
    sock = connect(server.port)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\n")  # and never the rest
    status, headers, body = parse_response(read_until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert "headers" in assert_openai_error(body, "request_timeout")["message"]


def test_a_connection_that_sends_nothing_is_closed_without_a_word(server):
    assert read_until_closed(connect(server.port)) == b""


def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too(server):
    sock = connect(server.port)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /v1/models HTTP/1.1\r\n")  # the next request starts, then stalls
    status, _, body = parse_response(read_until_closed(sock))
    assert status == 408
    assert_openai_error(body, "request_timeout")


def test_a_body_sent_too_slowly_gets_a_408_and_the_connection_closes(server):
    sock = connect(server.port)
    sock.sendall(raw_post_head("/v1/completions", 1000) + b'{"prompt":')  # 10 of 1000 bytes
    status, headers, body = parse_response(read_until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert "body" in assert_openai_error(body, "request_timeout")["message"]


def test_many_slow_clients_are_all_let_go(server):
    slow_headers = [connect(server.port) for _ in range(40)]
    for sock in slow_headers:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: te")
    slow_bodies = [connect(server.port) for _ in range(20)]
    for sock in slow_bodies:
        sock.sendall(raw_post_head("/tokenize", 1000) + b'{"content"')
    for sock in slow_headers + slow_bodies:
        read_until_closed(sock)  # returns once the server has closed it
    # The /metrics request itself is the one left in flight.
    wait_until(lambda: metric(server.url, "requests_in_flight") == 1, "the in-flight gauge to fall back")
    assert httpx.get(f"{server.url}/health").status_code == 200


# --- clients that leave ----------------------------------------------------------------------


def test_an_aborted_upload_is_a_disconnect_not_an_error(server):
    labels = '{path="/v1/chat/completions",status="%d"}'
    before = metric(server.url, "requests_total", labels % 499)
    sock = connect(server.port)
    sock.sendall(raw_post_head("/v1/chat/completions", 1000) + b'{"messages":')  # 12 of 1000 bytes
    sock.close()
    wait_until(lambda: metric(server.url, "requests_total", labels % 499) > before, "the disconnect to be counted")
    assert metric(server.url, "requests_total", labels % 500) == 0
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log


# --- the connection cap ------------------------------------------------------------------------


def hold_a_connection(port: int):
    """A connection the server has certainly accepted and keeps open: served once, then a request left unfinished."""
    holder = {}

    def served() -> bool:
        sock = connect(port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        if not sock.recv(65536).startswith(b"HTTP/1.1 200"):
            sock.close()  # a 503: the server has not yet seen an earlier client's connection close
            return False
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        holder["sock"] = sock
        return True

    wait_until(served, "a connection under the cap")
    return holder["sock"]


def test_requests_over_the_connection_cap_get_an_openai_shaped_503():
    # A long request timeout: the two connections holding the cap stay open as long as the test needs.
    options = ("--ctx-size", "256", "--parallel", "1", "--max-connections", "2", "--request-timeout", "600")
    with ServerProcess(*options) as s:
        held = [hold_a_connection(s.port) for _ in range(2)]
        r = httpx.get(f"{s.url}/v1/models")
        assert r.status_code == 503 and r.headers["connection"] == "close" and r.headers["retry-after"] == "1"
        error = assert_openai_error(r.content, "too_many_connections")
        assert error["type"] == "service_unavailable"
        for sock in held:
            sock.close()
        wait_until(lambda: httpx.get(f"{s.url}/v1/models").status_code == 200, "a free connection")
        text = httpx.get(f"{s.url}/metrics").text
        assert 'helios_requests_total{path="/v1/models",status="503"}' in text
