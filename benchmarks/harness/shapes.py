"""One protocol comparison of two servers: the same bodies to both, their answers' shapes compared.

Texts, ids and token counts are not compared (a base model under two templates says different
things); the protocol is: which fields each side sends, their JSON types, the values named as
`meaningful` (`type`, `role`, `stop_reason`, ...; ids by their prefix), and for streams the order
of the events and each event type's fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from .streams import sse_events

# A family's fold: (what to call the folded fields, whether a path only helios has is one of them).
Fold = tuple[str, Callable[[str, dict[str, str]], bool]]


def ask(url: str, path: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    """The answer to one body: its status, and its JSON body or, for a stream, its events."""
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=600) as response:
        text = response.read().decode()
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            return {"status": response.status_code, "body": json.loads(text)}
    events = sse_events(text.splitlines())
    return {"status": response.status_code, "events": [{"event": name, **data} for name, data in events]}


def report(
    names: Iterable[str],
    helios: list[dict],
    peer: list[dict],
    meaningful: frozenset = frozenset(),
    fold: Fold | None = None,
) -> list[str]:
    """A heading per body (with both statuses), then its differences, for the answers of both servers in order."""
    lines = []
    for name, ours, theirs in zip(names, helios, peer, strict=True):
        lines.append(f"## {name}: status helios {ours['status']}, llama-server {theirs['status']}")
        lines += [f"  {line}" for line in compare(ours, theirs, meaningful, fold)] or ["  same shape"]
    return lines


def compare(helios: dict, peer: dict, meaningful: frozenset = frozenset(), fold: Fold | None = None) -> list[str]:
    """The differences between two answers (from `ask`) to the same body."""
    if "body" in helios and "body" in peer:
        return differences(shape(helios["body"], meaningful), shape(peer["body"], meaningful), fold)
    if "events" not in helios or "events" not in peer:
        return ["one side streamed, the other did not"]
    out = []
    order = [event_sequence(answer["events"]) for answer in (helios, peer)]
    if order[0] != order[1]:
        out += [f"events helios:       {' '.join(order[0])}", f"events llama-server: {' '.join(order[1])}"]
    kinds = [_shapes_by_type(answer["events"], meaningful) for answer in (helios, peer)]
    for kind in sorted(set(kinds[0]) | set(kinds[1])):
        if kind not in kinds[0] or kind not in kinds[1]:
            out.append(f"{kind} events only from {'helios' if kind in kinds[0] else 'llama-server'}")
        elif found := differences(kinds[0][kind], kinds[1][kind], fold):
            out += [f"{kind}:", *(f"  {line}" for line in found)]
    return out


def shape(value: Any, meaningful: frozenset = frozenset(), path: str = "") -> dict[str, str]:
    """{field path: JSON type} of every field; list items share a path ending in [TYPE] (their `type`, or nothing).

    A field named in `meaningful` carries its value too (`string 'message'`), and an `id` there
    its prefix (`msg_...`), so that the two sides' values are compared with the types.
    """
    if isinstance(value, dict):
        out = {path or ".": "object"}
        for key, inner in value.items():
            out.update(shape(inner, meaningful, f"{path}.{key}"))
        return out
    if isinstance(value, list):
        out = {path or ".": "array"}
        for inner in value:
            # Items of different kinds (a message, a function_call) are compared with their own kind only.
            kind = inner.get("type") if isinstance(inner, dict) and isinstance(inner.get("type"), str) else ""
            out.update(shape(inner, meaningful, f"{path}[{kind}]"))
        return out
    kind = {bool: "boolean", int: "number", float: "number", str: "string", type(None): "null"}[type(value)]
    leaf = path.rsplit(".", 1)[-1]
    if leaf == "id" and leaf in meaningful and isinstance(value, str):
        return {path: f"{kind} {value.split('_')[0]}_..."}
    return {path or ".": f"{kind} {value!r}" if leaf in meaningful and value is not None else kind}


def differences(helios: dict[str, str], peer: dict[str, str], fold: Fold | None = None) -> list[str]:
    """Each path one side lacks (its descendants folded into it), or has with another type or meaningful value.

    A null on one side is no difference (an optional field left empty). `fold` gathers the
    paths only helios has that it names into one line (a family's request echo, say).
    """
    out = []
    folded = [p for p in sorted(helios) if p not in peer and fold and fold[1](p, helios)]
    if folded:
        out.append(f"only helios: {fold[0]} ({len(folded)} fields: {', '.join(folded)})")
    for path in sorted(set(helios) | set(peer)):
        parent = path[: max(path.rfind("."), path.rfind("["))]
        if path in folded or (parent and (parent in helios) != (parent in peer)):
            continue  # listed already, or under a parent listed as one side's only
        if path not in peer:
            out.append(f"only helios: {path} ({helios[path]})")
        elif path not in helios:
            out.append(f"only llama-server: {path} ({peer[path]})")
        elif helios[path] != peer[path] and "null" not in (helios[path], peer[path]):
            out.append(f"differs: {path} helios {helios[path]}, llama-server {peer[path]}")
    return out


def event_sequence(events: list[dict]) -> list[str]:
    """Each event's type (`event-line/type` where its event line says another), runs of one folded into one."""
    labels: list[str] = []
    for event in events:
        kind = event.get("type", "?")
        label = kind if event["event"] == kind else f"{event['event'] or '(no event line)'}/{kind}"
        if not labels or labels[-1] != label:
            labels.append(label)
    return labels


def _shapes_by_type(events: list[dict], meaningful: frozenset) -> dict[str, dict[str, str]]:
    """The fields of every event of each type, together (the event line's name left out)."""
    kinds: dict[str, dict[str, str]] = {}
    for event in events:
        data = {k: v for k, v in event.items() if k != "event"}
        kinds.setdefault(event.get("type", "?"), {}).update(shape(data, meaningful))
    return kinds
