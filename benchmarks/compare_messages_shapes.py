"""The same 10 Messages API bodies to helios and to the vendored llama-server; their shapes compared field by field.

    .venv/bin/python benchmarks/compare_messages_shapes.py [--model PATH] [--out FILE]

Both servers run the default model (llama-server with --jinja), greedy. For each body the
script reports the fields one server sends and the other does not, fields whose JSON types
differ, the values that carry protocol meaning (type, role, stop_reason, stop_sequence, the
blocks' types, id prefixes), and for streams the order of the events (runs of deltas
collapsed) and each event type's fields. Texts are not compared: the check is the protocol.
Needs `make tools` (llama-server) and `make model`. Writes the whole comparison as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_server import start  # noqa: E402  (it puts vendor/ and the root on sys.path)
from helios_core.resolve import default_model_path  # noqa: E402

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALLED = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
BASE = {"model": "claude-sonnet-4-5", "max_tokens": 8, "temperature": 0}
BODIES = [  # (name, path, body)
    ("plain", "/v1/messages", {**BASE, "messages": [{"role": "user", "content": "Once upon a time"}]}),
    ("system blocks, top_k", "/v1/messages",
     {**BASE, "top_k": 5, "system": [{"type": "text", "text": "Be brief."}], "messages": ASK}),
    ("stop_sequences", "/v1/messages", {**BASE, "max_tokens": 16, "stop_sequences": [" ", "\n"], "messages": ASK}),
    ("stream", "/v1/messages", {**BASE, "stream": True, "messages": ASK}),
    ("stream, stop_sequences", "/v1/messages",
     {**BASE, "max_tokens": 16, "stream": True, "stop_sequences": [" ", "\n"], "messages": ASK}),
    ("tools, tool_choice any", "/v1/messages",
     {**BASE, "max_tokens": 40, "tools": [WEATHER], "tool_choice": {"type": "any"}, "messages": ASK}),
    ("tools, tool_choice any, stream", "/v1/messages",
     {**BASE, "max_tokens": 40, "stream": True, "tools": [WEATHER], "tool_choice": {"type": "any"}, "messages": ASK}),
    ("tool_result round trip", "/v1/messages", {**BASE, "tools": [WEATHER], "messages": [
        *ASK, {"role": "assistant", "content": [CALLED]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "18 C"}]}]}),
    ("count_tokens", "/v1/messages/count_tokens", {"model": "claude-sonnet-4-5", "tools": [WEATHER], "messages": ASK}),
    ("malformed block", "/v1/messages", {**BASE, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
]  # fmt: skip
# Values that carry protocol meaning, compared as values (ids by their prefix).
MEANINGFUL = {"type", "role", "model", "stop_reason", "stop_sequence", "event"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF model (default: the default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: benchmarks/results/...)")
    args = parser.parse_args()
    model = args.model or default_model_path()
    answers = {}
    for kind, extra in (("helios", ("--ctx-size", "4096")), ("llama-server", ("--jinja",))):
        server = start(kind, 1, args.threads, model, extra if kind == "llama-server" else ())
        try:
            answers[kind] = [send(server.url, path, body) for _, path, body in BODIES]
        finally:
            server.stop()
    pairs = zip(BODIES, answers["helios"], answers["llama-server"], strict=True)
    report = [compare(name, ours, peer) for (name, _, _), ours, peer in pairs]
    for entry in report:
        print(f"\n## {entry['body']}  (status helios {entry['status'][0]}, llama-server {entry['status'][1]})")
        for line in entry["differences"] or ["same shape"]:
            print(f"- {line}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(__file__).parent / "results" / f"compare_messages_shapes-{stamp}.json"
    out.write_text(json.dumps({"model": str(model), "report": report, "answers": answers}, indent=1))
    print(f"\nwritten: {out}")


def send(url: str, path: str, body: dict) -> dict:
    """The answer: status and JSON body, or for a stream its events as (event line, data)."""
    with httpx.stream("POST", url + path, json=body, headers={"x-api-key": "unused"}, timeout=600) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            return {"status": response.status_code, "body": response.json()}
        events, name = [], None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append({"event": name, **json.loads(line[6:])})
                name = None
        return {"status": response.status_code, "events": events}


def compare(name: str, helios: dict, peer: dict) -> dict:
    differences: list[str] = []
    if "events" in helios or "events" in peer:
        order = [_order(a.get("events", [])) for a in (helios, peer)]
        if order[0] != order[1]:
            differences.append(f"event order: helios {order[0]}; llama-server {order[1]}")
        for kind in sorted({e["type"] for a in (helios, peer) for e in a.get("events", [])}):
            of = [_merged([e for e in a.get("events", []) if e["type"] == kind]) for a in (helios, peer)]
            if None in of:
                differences.append(f"{kind} events only from {'llama-server' if of[0] is None else 'helios'}")
            else:
                differences += [f"{kind}: {d}" for d in _diff(of[0], of[1], "")]
    else:
        differences += _diff(helios["body"], peer["body"], "")
    if helios["status"] != peer["status"]:
        differences.insert(0, f"status: helios {helios['status']}, llama-server {peer['status']}")
    return {"body": name, "status": [helios["status"], peer["status"]], "differences": differences}


def _order(events: list[dict]) -> list[str]:
    names: list[str] = []
    for event in events:
        label = event["event"] if event["event"] == event["type"] else f"{event['event']}/{event['type']}"
        if not names or names[-1] != label:
            names.append(label)
    return names


def _merged(values: list) -> object:
    """One value holding every field any of `values` has (the first value of each)."""
    if not values:
        return None
    if all(isinstance(v, dict) for v in values):
        keys = dict.fromkeys(k for v in values for k in v)
        return {k: _merged([v[k] for v in values if k in v]) for k in keys}
    if all(isinstance(v, list) for v in values):
        items = [item for v in values for item in v]
        return [_merged(items)] if items else []
    return values[0]


def _diff(a: object, b: object, path: str) -> list[str]:
    where = path or "(body)"
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}".lstrip(".") + " only in helios" for k in a if k not in b]
        out += [f"{path}.{k}".lstrip(".") + " only in llama-server" for k in b if k not in a]
        for k in a:
            if k in b:
                out += _diff(a[k], b[k], f"{path}.{k}".lstrip("."))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if not a or not b:
            return [] if a == b else [f"{where}: helios has {len(a)} items, llama-server {len(b)}"]
        return _diff(_merged(a), _merged(b), path + "[]")
    if _type(a) != _type(b):
        return [f"{where}: helios {_type(a)} {_short(a)}, llama-server {_type(b)} {_short(b)}"]
    leaf = path.rsplit(".", 1)[-1]
    if leaf in MEANINGFUL and a != b:
        return [f"{where}: helios {a!r}, llama-server {b!r}"]
    if leaf == "id" and isinstance(a, str) and a.split("_")[0] != b.split("_")[0]:
        return [f"{where}: helios {a.split('_')[0]}_..., llama-server {b.split('_')[0]}_..."]
    return []


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


if __name__ == "__main__":
    main()
