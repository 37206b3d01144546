"""The same 10 /v1/responses bodies to helios and to the vendored llama-server; their shapes compared field by field.

    .venv/bin/python benchmarks/compare_responses_shapes.py   (after `make tools`)

Both servers run the default model on loopback (llama-server with --jinja, as the brief asks).
For each body the script prints the HTTP status of each, then every field path that one side
has and the other lacks, or has with another JSON type. Streams are compared by their sequence
of event types (runs of deltas folded into one) and by the fields of each event type. Values
(texts, ids, token counts) are not compared: a base model under two templates says different
things; the protocol is the point.

A script beside the benchmarks, not a test: it needs `make tools` (llama-server), takes a minute,
and its output is a list of differences to read and explain, not a pass or a fail.
Results go to benchmarks/results/compare_responses_shapes-<time>.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent)]

from bench_server import start  # noqa: E402

from helios_core import default_model_path  # noqa: E402

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


def shape(value: Any, path: str = "") -> dict[str, str]:
    """{field path: JSON type} of every field; list elements share one path ending in [KIND] (their
    `type`, or nothing)."""
    if isinstance(value, dict):
        out = {path or ".": "object"}
        for key, inner in value.items():
            out.update(shape(inner, f"{path}.{key}"))
        return out
    if isinstance(value, list):
        out = {path or ".": "array"}
        for inner in value:
            # Items of different kinds (a message, a function_call) are compared with their own kind only.
            kind = inner.get("type") if isinstance(inner, dict) and isinstance(inner.get("type"), str) else ""
            out.update(shape(inner, f"{path}[{kind}]"))
        return out
    kind = {bool: "boolean", int: "number", float: "number", str: "string", type(None): "null"}[type(value)]
    return {path or ".": kind}


def ask(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Status, and the body's shape, or the stream's event sequence and each event type's shape."""
    with httpx.stream("POST", f"{url}/v1/responses", json={**BASE, **body}, timeout=300) as r:
        raw = r.read().decode()
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            return {"status": r.status_code, "shape": shape(json.loads(raw))}
    events, sequence, named = {}, [], True
    for frame in filter(None, raw.split("\n\n")):
        lines = dict(line.split(": ", 1) for line in frame.split("\n") if ": " in line)
        data = json.loads(lines["data"])
        named &= lines.get("event") == data.get("type")
        kind = data.get("type", "?")
        if not sequence or sequence[-1] != kind or not kind.endswith(".delta"):
            sequence.append(kind)
        events.setdefault(kind, {}).update(shape(data))
    return {"status": r.status_code, "sequence": sequence, "events": events, "event_lines_match_type": named}


def differences(helios: dict[str, str], peer: dict[str, str]) -> list[str]:
    """Each path one side lacks (its descendants folded into it), or has with another type.

    The request parameters OpenAI's response object repeats (ECHO), which llama-server leaves out,
    are one line.
    """
    out = []
    echoed = [p for p in sorted(helios) if p not in peer and _echo_field(p, helios)]
    if echoed:
        out.append(f"  only helios: the request echo ({len(echoed)} fields: {', '.join(echoed)})")
    for path in sorted(set(helios) | set(peer)):
        parent = path[: max(path.rfind("."), path.rfind("["))]
        if path in echoed or (parent and (parent in helios) != (parent in peer)):
            continue  # listed already, or under a parent listed as one side's only
        if path not in peer:
            out.append(f"  only helios: {path} ({helios[path]})")
        elif path not in helios:
            out.append(f"  only llama-server: {path} ({peer[path]})")
        elif helios[path] != peer[path] and "null" not in (helios[path], peer[path]):
            out.append(f"  type: {path} helios {helios[path]}, llama-server {peer[path]}")
    return out


def _echo_field(path: str, fields: dict[str, str]) -> bool:
    """A top-level field of a response object (the body, or an event's `response`) named in ECHO."""
    prefix = ".response" if path.startswith(".response.") else ""
    rest = path.removeprefix(prefix)
    return rest.count(".") == 1 and "[" not in rest and rest[1:] in ECHO and f"{prefix}.object" in fields


def compare(name: str, helios: dict, peer: dict) -> list[str]:
    lines = [f"## {name}: status helios {helios['status']}, llama-server {peer['status']}"]
    if "shape" in helios and "shape" in peer:
        return lines + differences(helios["shape"], peer["shape"])
    if "sequence" not in helios or "sequence" not in peer:
        return lines + ["  one side streamed, the other did not"]
    if helios["sequence"] != peer["sequence"]:
        lines += [
            f"  events helios:       {' '.join(helios['sequence'])}",
            f"  events llama-server: {' '.join(peer['sequence'])}",
        ]
    lines.append(
        f"  event: lines match data.type: helios {helios['event_lines_match_type']}, "
        f"llama-server {peer['event_lines_match_type']}"
    )
    for kind in sorted(set(helios["events"]) & set(peer["events"])):
        found = differences(helios["events"][kind], peer["events"][kind])
        lines += [f"  {kind}:", *found] if found else []
    return lines


def main() -> None:
    model = default_model_path()
    runs: dict[str, dict[str, dict]] = {}
    for kind, extra in (("helios", ()), ("llama-server", ("--jinja",))):
        server = start(kind, parallel=1, threads=2, model=model, extra=extra)
        try:
            runs[kind] = {name: ask(server.url, body) for name, body in BODIES.items()}
        finally:
            server.stop()
    report = [line for name in BODIES for line in compare(name, runs["helios"][name], runs["llama-server"][name])]
    print("\n".join(report))
    results = ROOT / "results" / f"compare_responses_shapes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results.write_text(json.dumps({"runs": runs, "report": report}, indent=1))
    print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()
