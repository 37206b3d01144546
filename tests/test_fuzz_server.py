"""Fuzzing a real server with 10,000 request bodies: never a 5xx, and healthy afterwards.

Marked slow (minutes): `pytest -m slow tests/test_fuzz_server.py`. The
bodies come from hypothesis strategies, drawn up front with a fixed seed
(derandomize), then sent by a few client threads over loopback. They mix
valid-ish and broken requests to every endpoint (OpenAI's Responses and Anthropic's Messages too):
wrong types, nulls, huge numbers, NULs, nested lists, any unicode, and bodies that are not JSON at
all. Generations stay short: max_tokens is small where it is valid, and
the context is 128 tokens, which bounds the rest.

HELIOS_FUZZ_BODIES sets the number of bodies (default 10,000).
"""

from __future__ import annotations

import collections
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.server_process import PATIENCE, ServerProcess

N_BODIES = int(os.environ.get("HELIOS_FUZZ_BODIES", "10000"))
CLIENTS = 4

# --- strategies --------------------------------------------------------------------------------

huge = st.integers(min_value=-(2**70), max_value=2**70)
any_text = st.text(max_size=40)  # every code point but surrogates, NUL included
nasty_text = st.sampled_from(["", "\x00", "a\x00 tail", "<start_of_turn>user\n", "\u202e\ufeff", "🦄" * 10, " " * 50])
scalar = st.one_of(st.none(), st.booleans(), huge, st.floats(allow_nan=False, allow_infinity=False), any_text)
junk = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3))


def sometimes_junk(valid: st.SearchStrategy, one_in: int = 8) -> st.SearchStrategy:
    """`valid`, or once in `one_in` draws anything at all (a body has many fields: most should be valid)."""
    # Junk on the last draw, not the first: hypothesis starts from the simplest draws, and those should be valid.
    return st.integers(1, one_in).flatmap(lambda draw: junk if draw == one_in else valid)


token_id = sometimes_junk(st.integers(0, 262_143), one_in=20)  # junk: huge ids, booleans, ...
token_ids = st.lists(token_id, min_size=1, max_size=6)
text = st.one_of(any_text, any_text, nasty_text)
prompt = sometimes_junk(
    st.one_of(text, st.lists(text, min_size=1, max_size=3), token_ids, st.lists(token_ids, min_size=1, max_size=2))
)
part = st.fixed_dictionaries({"type": sometimes_junk(st.just("text"), 20), "text": sometimes_junk(text, 20)})
message = st.fixed_dictionaries(
    {
        "role": sometimes_junk(st.sampled_from(["system", "developer", "user", "assistant", "tool"]), 20),
        "content": sometimes_junk(st.one_of(text, text, st.lists(part, max_size=2)), 20),
    }
)
logit_bias = st.dictionaries(
    st.one_of(st.integers(-5, 262_150).map(str), any_text), sometimes_junk(st.floats(-150, 150)), max_size=3
)
# Rarer: junk here may be a valid huge number or null (no limit), a generation that runs to the context's end.
max_tokens = sometimes_junk(st.integers(1, 4), one_in=30)
sampling = {
    "max_completion_tokens": sometimes_junk(st.one_of(st.none(), st.integers(-1, 4)), one_in=30),
    "temperature": sometimes_junk(st.floats(0, 2)),
    "top_p": sometimes_junk(st.floats(0, 1)),
    "top_k": sometimes_junk(st.integers(0, 100)),
    "min_p": sometimes_junk(st.floats(0, 1)),
    "seed": sometimes_junk(huge),
    "stop": sometimes_junk(st.one_of(text, st.lists(text, max_size=3))),
    "presence_penalty": sometimes_junk(st.floats(-2, 2)),
    "frequency_penalty": sometimes_junk(st.floats(-2, 2)),
    "repeat_penalty": sometimes_junk(st.floats(0.01, 100)),
    "logit_bias": sometimes_junk(logit_bias),
    "n": sometimes_junk(st.integers(1, 3)),
    "stream": sometimes_junk(st.booleans()),
    "stream_options": sometimes_junk(st.fixed_dictionaries({"include_usage": sometimes_junk(st.booleans())})),
    "model": junk,
    "user": junk,
}
chat = st.fixed_dictionaries(
    {"messages": sometimes_junk(st.lists(message, min_size=1, max_size=3)), "max_tokens": max_tokens},
    optional={
        **sampling,
        "logprobs": sometimes_junk(st.booleans()),
        "top_logprobs": sometimes_junk(st.integers(0, 20)),
    },
)
completion = st.fixed_dictionaries(
    {"prompt": prompt, "max_tokens": max_tokens},
    optional={**sampling, "logprobs": sometimes_junk(st.integers(0, 5))},
)
# /v1/responses: items of every kind (function calls that may answer nothing), tools built in or not.
input_part = st.fixed_dictionaries(
    {"type": sometimes_junk(st.sampled_from(["input_text", "output_text", "input_image"]), 10), "text": text}
)
call_id = sometimes_junk(st.sampled_from(["call_1", "call_2"]), 20)
input_item = st.one_of(
    st.fixed_dictionaries(
        {
            "role": sometimes_junk(st.sampled_from(["user", "system", "developer", "assistant"]), 20),
            "content": sometimes_junk(st.one_of(text, st.lists(input_part, max_size=2)), 20),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function_call"),
            "call_id": call_id,
            "name": sometimes_junk(st.just("f")),
            "arguments": sometimes_junk(st.sampled_from(["{}", '{"a": 1}', "{"])),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output"), "call_id": call_id, "output": sometimes_junk(text)}
    ),
    st.fixed_dictionaries({"type": sometimes_junk(st.sampled_from(["reasoning", "item_reference", "computer_call"]))}),
)
response_tool = st.fixed_dictionaries(
    {
        "type": sometimes_junk(st.sampled_from(["function", "web_search"]), 10),
        "name": sometimes_junk(st.sampled_from(["f", "g"]), 10),
        "parameters": sometimes_junk(st.just({"type": "object", "properties": {"a": {"type": "integer"}}}), 10),
    }
)
text_format = st.sampled_from(
    [{"type": "text"}, {"type": "json_object"}, {"type": "json_schema", "name": "x", "schema": {"type": "object"}}]
)
responses = st.fixed_dictionaries(
    {
        "input": sometimes_junk(st.one_of(text, st.lists(input_item, min_size=1, max_size=3))),
        "max_output_tokens": max_tokens,
    },
    optional={
        **{k: v for k, v in sampling.items() if k not in ("max_completion_tokens", "n", "stream_options")},
        "instructions": sometimes_junk(text),
        "tools": sometimes_junk(st.lists(response_tool, max_size=2)),
        "tool_choice": sometimes_junk(st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"}])),
        "text": sometimes_junk(st.fixed_dictionaries({"format": sometimes_junk(text_format)})),
        "store": sometimes_junk(st.booleans()),
        "previous_response_id": sometimes_junk(st.sampled_from(["resp_nowhere", ""])),
        "include": sometimes_junk(st.just(["message.output_text.logprobs"])),
        "top_logprobs": sometimes_junk(st.integers(0, 20)),
        "metadata": junk,
        "background": sometimes_junk(st.booleans()),
    },
)
tokenize = st.fixed_dictionaries(
    {"content": sometimes_junk(text)},
    optional={"add_special": sometimes_junk(st.booleans()), "with_pieces": sometimes_junk(st.booleans())},
)
# Anthropic's Messages API: blocks of every kind, tool ids that match and ones that do not.
tool_ids = st.sampled_from(["toolu_1", "toolu_2"])
block = st.one_of(
    part,
    st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": sometimes_junk(tool_ids),
            "name": sometimes_junk(st.just("f")),
            "input": sometimes_junk(st.dictionaries(any_text, scalar, max_size=2)),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": sometimes_junk(tool_ids),
            "content": sometimes_junk(st.one_of(text, st.lists(part, max_size=2))),
            "is_error": sometimes_junk(st.booleans()),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["image", "document", "thinking", "redacted_thinking", "server_tool_use"]),
            "thinking": text,
        }
    ),
)
turn = st.fixed_dictionaries(
    {
        "role": sometimes_junk(st.sampled_from(["user", "assistant", "system"]), 20),
        "content": sometimes_junk(st.one_of(text, st.lists(block, max_size=3)), 20),
    }
)
schema = st.sampled_from(
    [
        {"type": "object", "properties": {"x": {"type": "string"}}},
        {"type": "object"},
        {"type": "object", "propertyNames": {"pattern": "^a"}},
        {"type": "string"},
    ]
)
anthropic_tool = st.fixed_dictionaries(
    {"name": sometimes_junk(st.sampled_from(["f", "g"])), "input_schema": sometimes_junk(schema)},
    optional={"type": sometimes_junk(st.sampled_from(["custom", "web_search_20250305"])), "description": text},
)
tool_choice = st.fixed_dictionaries(
    {"type": sometimes_junk(st.sampled_from(["auto", "any", "tool", "none"]))},
    optional={"name": sometimes_junk(st.sampled_from(["f", "h"])), "disable_parallel_tool_use": st.booleans()},
)
messages = st.fixed_dictionaries(
    {"messages": sometimes_junk(st.lists(turn, min_size=1, max_size=3)), "max_tokens": max_tokens},
    optional={
        "model": junk,
        "system": sometimes_junk(st.one_of(text, st.lists(part, max_size=2))),
        "stop_sequences": sometimes_junk(st.lists(text, max_size=3)),
        "temperature": sometimes_junk(st.floats(0, 1)),
        "top_p": sometimes_junk(st.floats(0, 1)),
        "top_k": sometimes_junk(st.integers(0, 100)),
        "stream": sometimes_junk(st.booleans()),
        "tools": sometimes_junk(st.lists(anthropic_tool, max_size=2)),
        "tool_choice": sometimes_junk(tool_choice),
        "metadata": junk,
        "thinking": sometimes_junk(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["enabled", "disabled"]), "budget_tokens": st.integers(0, 5000)}
            )
        ),
    },
)
detokenize = st.fixed_dictionaries({"tokens": sometimes_junk(st.one_of(token_ids, st.lists(token_ids, max_size=2)))})


def encoded(strategy: st.SearchStrategy) -> st.SearchStrategy:
    # The standard library's encoder: orjson cannot write the integers beyond 64 bits that clients can send.
    return strategy.map(lambda body: json.dumps(body, ensure_ascii=False).encode())


not_json = st.one_of(
    encoded(junk),
    st.binary(max_size=60),
    st.sampled_from([b"", b"{", b"[]", b"null", b"7", b'"x"', b'{"messages": NaN}', b"\xff\xfe{}", b'{"a": 1e999}']),
)


def bodies(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Encoded `strategy`, or once in 8 draws a body that is no JSON object at all."""
    return st.integers(1, 8).flatmap(lambda draw: not_json if draw == 8 else encoded(strategy))


requests = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), bodies(chat)),
    st.tuples(st.just("/v1/completions"), bodies(completion)),
    st.tuples(st.just("/v1/responses"), bodies(responses)),
    st.tuples(st.just("/v1/responses/input_tokens"), bodies(responses)),
    st.tuples(st.just("/tokenize"), bodies(tokenize)),
    st.tuples(st.just("/detokenize"), bodies(detokenize)),
    st.tuples(st.just("/v1/messages"), bodies(messages)),
    st.tuples(st.just("/v1/messages/count_tokens"), bodies(messages)),
)


def draw_requests(count: int) -> list[tuple[str, bytes]]:
    """`count` (path, body) pairs, the same ones on every run."""
    drawn: list[tuple[str, bytes]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests)
    def collect(request):
        drawn.append(request)

    collect()
    return drawn[:count]


# --- the run -------------------------------------------------------------------------------------


def send(client: httpx.Client, path: str, body: bytes) -> tuple[int, str | None]:
    """The status, and the error type of an SSE error event if a stream ended with one (either family's shape)."""
    headers = {"Content-Type": "application/json"}
    with client.stream("POST", path, content=body, headers=headers, timeout=PATIENCE) as r:
        streamed_error = None
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            for line in r.iter_lines():
                if line.startswith(('data: {"error"', 'data: {"type":"error"')):
                    streamed_error = json.loads(line[6:])["error"]["type"]
                elif line.startswith('data: {"type":"error"'):  # /v1/responses' error event
                    streamed_error = json.loads(line[6:])["code"]
        else:
            r.read()
        return r.status_code, streamed_error


@pytest.mark.slow
def test_fuzzed_bodies_never_get_a_5xx():
    bodies = draw_requests(N_BODIES)
    assert len(bodies) == N_BODIES
    with ServerProcess("--ctx-size", "128", "--parallel", "2") as server:
        started = time.monotonic()

        def run(share: list[tuple[str, bytes]]):
            statuses: collections.Counter[int] = collections.Counter()
            failures = []
            with httpx.Client(base_url=server.url) as client:
                for path, body in share:
                    status, streamed_error = send(client, path, body)
                    statuses[status] += 1
                    if status >= 500 or streamed_error in ("server_error", "api_error"):
                        failures.append((path, body, status, streamed_error))
            return statuses, failures

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(run, [bodies[i::CLIENTS] for i in range(CLIENTS)]))
        elapsed = time.monotonic() - started
        statuses = sum((counts for counts, _ in results), collections.Counter())
        failures = [failure for _, found in results for failure in found]
        print(f"\nfuzz: {len(bodies)} bodies in {elapsed:.0f} s; statuses {dict(sorted(statuses.items()))}")

        assert not failures, failures[:10]
        assert httpx.get(f"{server.url}/health").status_code == 200
        ok = httpx.post(f"{server.url}/v1/completions", json={"prompt": "Still here?", "max_tokens": 2}, timeout=60)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1
        assert "Traceback" not in server.log()
