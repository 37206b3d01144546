"""HTTP clients of the benchmarks, and the one Server-Sent Events parser they read streams with."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import httpx


def http_client() -> httpx.AsyncClient:
    # A fresh connection per request for both servers: a kept-alive connection that the server
    # closes between requests would otherwise fail the next one, whichever server it is.
    return httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_keepalive_connections=0))


def sse_events(lines: Iterable[str]) -> list[tuple[str | None, dict]]:
    """(event name or None, parsed data) of each event in a stream's lines; `data: [DONE]` ends it."""
    reader, events = _EventReader(), []
    for line in lines:
        if event := reader.feed(line):
            events.append(event)
        if reader.done:
            break
    return events


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One streamed /v1/completions request (`stream` and usage are asked for here).

    Returns the time to the first text (seconds), the tokens generated (the usage's count, or
    the chunks with text where a server sends none), the seconds from first to last text, the
    text, and the last `usage` and llama-server-style `timings` the stream sent (or None).
    """
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = last = usage = timings = None
    pieces: list[str] = []
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        reader = _EventReader()
        async for line in response.aiter_lines():  # read as they come: the timings depend on it
            if not (event := reader.feed(line)):
                continue
            data = event[1]
            usage = data.get("usage") or usage
            timings = data.get("timings") or timings
            for choice in data.get("choices", []):
                if choice.get("text"):
                    last = time.perf_counter()
                    first = first or last
                    pieces.append(choice["text"])
    return {
        "ttft": (first or time.perf_counter()) - sent,
        "tokens": usage["completion_tokens"] if usage else len(pieces),
        "stream_seconds": (last - first) if first and last and last > first else 0.0,
        "text": "".join(pieces),
        "usage": usage,
        "timings": timings,
    }


class _EventReader:
    """A stream's lines, fed one at a time; `feed` returns an event when a data line completes one."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.done = False

    def feed(self, line: str) -> tuple[str | None, dict] | None:
        if line.startswith("event: "):
            self.name = line[7:]
        elif line == "data: [DONE]":
            self.done = True
        elif line.startswith("data: "):
            event, self.name = (self.name, json.loads(line[6:])), None
            return event
        return None
