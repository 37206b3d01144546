"""Stored responses (`store: true`), in memory, bounded in count and bytes, least recently used out first.

Each entry holds one response, its own input items and the id of the response it continued:
a conversation is the chain of its entries, so turn N stores turn N's items once instead of
the whole conversation again. Reading a conversation touches every entry of its chain, so an
active conversation stays recent; once any entry of a chain is evicted or deleted, the
responses after it can no longer be continued (previous_response_id is then a 404 that names
the missing one), though they can still be retrieved.

The handlers run on the event loop, one at a time: no lock is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_MAX_COUNT = 1000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class Stored:
    response: dict[str, Any]
    items: list[dict[str, Any]]  # this request's input items
    previous: str | None  # the response it continued
    size: int  # bytes, as JSON


class MissingResponse(LookupError):
    """A response id the store does not hold (never stored, deleted or evicted); args[0] is the id."""


class ResponseStore:
    """Up to max_count responses and max_bytes of their JSON; max_count 0 stores nothing."""

    def __init__(self, max_count: int = DEFAULT_MAX_COUNT, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, Stored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response: dict[str, Any], items: list[dict[str, Any]], previous: str | None) -> None:
        size = len(orjson.dumps(response)) + len(orjson.dumps(items))
        if self.max_count == 0 or size > self.max_bytes:
            return  # one answer larger than the whole store is not kept
        self.delete(response["id"])
        self._entries[response["id"]] = Stored(response, items, previous, size)
        self.bytes += size
        while len(self._entries) > self.max_count or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    def get(self, response_id: str) -> Stored:
        entry = self._entries.get(response_id)
        if entry is None:
            raise MissingResponse(response_id)
        self._entries.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> bool:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry is not None

    def conversation(self, response_id: str) -> list[dict[str, Any]]:
        """Every item of the conversation up to and including this response's output, oldest first."""
        turns = []
        next_id: str | None = response_id
        while next_id is not None:
            entry = self.get(next_id)
            turns.append(entry)
            next_id = entry.previous
        items: list[dict[str, Any]] = []
        for entry in reversed(turns):
            items += entry.items
            items += entry.response["output"]
        return items

    def input_items(self, response_id: str) -> list[dict[str, Any]]:
        """The items a response was answered from, oldest first: its conversation before it, then its input."""
        entry = self.get(response_id)
        before = self.conversation(entry.previous) if entry.previous is not None else []
        return before + entry.items
