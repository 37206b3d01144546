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
import time
from pathlib import Path

from harness import ask, report, start_server

from helios_core.resolve import default_model_path

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
MEANINGFUL = frozenset({"type", "role", "model", "stop_reason", "stop_sequence", "id"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF model (default: the default model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: benchmarks/results/...)")
    args = parser.parse_args()
    model = args.model or default_model_path()
    answers = {}
    for kind, extra in (("helios", ("--ctx-size", "4096")), ("llama-server", ("--jinja",))):
        server = start_server(kind, model, args.threads, parallel=1, extra=extra)
        try:
            answers[kind] = [ask(server.url, path, body, {"x-api-key": "unused"}) for _, path, body in BODIES]
        finally:
            server.stop()
    lines = report([name for name, _, _ in BODIES], answers["helios"], answers["llama-server"], MEANINGFUL)
    print("\n".join(lines))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(__file__).parent / "results" / f"compare_messages_shapes-{stamp}.json"
    out.write_text(json.dumps({"model": str(model), "report": lines, "answers": answers}, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
