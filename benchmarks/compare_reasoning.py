"""Reasoning fields and stream events of helios and llama-server on the same scripted outputs (docs/reasoning.md).

Neither server is asked to think: llama-server writes each text under a GBNF grammar of exactly that text,
helios under the scripted plug-in sampler (tests/scripted_sampler.py). Start both on the same chat template:

    llama-server -m MODEL --jinja --chat-template-file T --reasoning-format deepseek --port 8941
    helios-engine serve --model MODEL --chat-template-file T --reasoning-format think --port 8931 \\
        --sampler script=tests.scripted_sampler:scripted
    python benchmarks/compare_reasoning.py http://127.0.0.1:8941 http://127.0.0.1:8931

and read the two columns: each case's message (whole) and its deltas (streamed).
"""

from __future__ import annotations

import json
import sys

import httpx
from harness import sse_events

CASES = {
    "split": ("Two and two. That makes 4.\n</think>\n\nThe answer is 4.", {}),
    "budget 3": ("one two three four five six seven", {"reasoning_budget_tokens": 3}),
    "stop in reasoning": ("I stop to think.\n</think>\n\nGo on. STOP here", {"stop": ["STOP", "stop"]}),
    "opened by the output": ("<think>\nHmm.\n</think>\n\nHi!", {}),
    "no section": ("Plain answer with </think> in it", {}),
}


def scripted(text: str, peer: bool, **fields) -> dict:
    body = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 64, "temperature": 0, **fields}
    if peer:
        return {**body, "grammar": "root ::= " + json.dumps(text) + "\n"}
    return {**body, "sampler": "script", "sampler_args": {"text": text}}


def whole(url: str, body: dict) -> dict:
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()
    return answer["choices"][0]["message"] if "choices" in answer else answer


def deltas(url: str, body: dict) -> list[dict]:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        chunks = [chunk for _, chunk in sse_events(response.iter_lines())]
    return [chunk["choices"][0]["delta"] if chunk["choices"] else {"usage": chunk.get("usage")} for chunk in chunks]


def main(peer_url: str, helios_url: str) -> None:
    for name, (text, fields) in CASES.items():
        print(f"== {name}")
        for label, url, peer in (("llama-server", peer_url, True), ("helios", helios_url, False)):
            body = scripted(text, peer, **fields)
            print(f"  {label:12} whole:  {json.dumps(whole(url, body))}")
            print(f"  {label:12} stream: {json.dumps(deltas(url, body))}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
