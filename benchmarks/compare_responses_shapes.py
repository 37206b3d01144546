"""The same 10 /v1/responses bodies to helios and to the vendored llama-server; their shapes compared field by field.

    .venv/bin/python benchmarks/compare_responses_shapes.py   (after `make tools`)

Both servers run the default model on loopback (llama-server with --jinja, as the brief asks).
For each body the script prints the HTTP status of each, then every field path that one side
has and the other lacks, or has with another JSON type. Streams are compared by their sequence
of event types (runs of deltas folded into one; an `event:` line that names another type shows
as `line/type`) and by the fields of each event type (benchmarks/harness/shapes.py). Values
(texts, ids, token counts) are not compared: a base model under two templates says different
things; the protocol is the point.

A script beside the benchmarks, not a test: it needs `make tools` (llama-server), takes a minute,
and its output is a list of differences to read and explain, not a pass or a fail.
Results go to benchmarks/results/compare_responses_shapes-<time>.json.
"""

from __future__ import annotations

import json
import time
from typing import Any

from harness import RESULTS, ask, report, start_server

from helios_core import default_model_path

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
    "additionalProperties": False,
}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
# Fields of OpenAI's response object that repeat the request (and the envelope fields llama-server leaves out).
ECHO = {
    "background",
    "error",
    "incomplete_details",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt_cache_key",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
    "user",
    "completed_at",
    "created_at",
    "model",
    "output",
    "usage",
}
BASE = {"model": "m", "temperature": 0, "max_output_tokens": 24}
BODIES: dict[str, dict[str, Any]] = {
    "plain": {"input": "The capital of France is"},
    "plain, streamed": {"input": "The capital of France is", "stream": True},
    "instructions and message items": {
        "instructions": "Be brief.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
    },
    "max_output_tokens reached": {"input": "Count: one, two,", "max_output_tokens": 2},
    "text.format json_schema": {
        "input": "Weather as JSON:",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": SCHEMA, "strict": True}},
    },
    "function tool, tool_choice required": {
        "input": "Weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": "required",
    },
    "function tool, tool_choice required, streamed": {
        "input": "Weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream": True,
    },
    "function_call_output sent back by hand": {
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            CALL,
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        ],
        "tools": [WEATHER],
    },
    "bad: unknown item type": {"input": [{"type": "computer_call", "id": "x"}]},
    "bad: built-in tool web_search": {"input": "Hi", "tools": [{"type": "web_search"}]},
}


def main() -> None:
    model = default_model_path()
    runs: dict[str, list[dict]] = {}
    for kind, extra in (("helios", ()), ("llama-server", ("--jinja",))):
        server = start_server(kind, model, 2, parallel=1, extra=extra)
        try:
            runs[kind] = [ask(server.url, "/v1/responses", {**BASE, **body}) for body in BODIES.values()]
        finally:
            server.stop()
    lines = report(BODIES, runs["helios"], runs["llama-server"], fold=("the request echo", _echo_field))
    print("\n".join(lines))
    results = RESULTS / f"compare_responses_shapes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results.write_text(json.dumps({"runs": runs, "report": lines}, indent=1))
    print(f"\nwritten to {results}")


def _echo_field(path: str, fields: dict[str, str]) -> bool:
    """A top-level field of a response object (the body, or an event's `response`) named in ECHO."""
    prefix = ".response" if path.startswith(".response.") else ""
    rest = path.removeprefix(prefix)
    return rest.count(".") == 1 and "[" not in rest and rest[1:] in ECHO and f"{prefix}.object" in fields


if __name__ == "__main__":
    main()
