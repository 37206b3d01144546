"""One answer as Anthropic's content blocks, built step by step from the engine's events.

The same builder serves both answers: a stream sends the block events it returns as they
settle, a whole answer reads `content` at the end. A served reasoning model's reasoning section
is a thinking block first (thinking_delta pieces, then an empty signature_delta: there is no
signature to give, and Anthropic's clients expect the event before the block stops). Text and
tool calls are told apart by the request's tool plan, through the CallFollower that chat
completions use; each tool call is a tool_use block whose `input` streams as input_json_delta
pieces and ends as an object.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from helios_core.engine import Done
from helios_core.generate import Step, Usage
from helios_http.tools import CallFollower, ToolPlan

# The engine's finish reasons as Anthropic's stop reasons; "stop" is end_turn unless a stop string or a call ended it.
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}
# A block as content_block_start opens it. A thinking block's signature stays empty: only Anthropic can sign.
_EMPTY = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""}}


class MessageBlocks:
    """Content blocks of one answer. `feed` each Step, then `finish` with its Done; each returns the stream
    events (content_block_start / _delta / _stop bodies, each with its "type") that it settled."""

    def __init__(self, plan: ToolPlan | None):
        self._follower = CallFollower(plan) if plan is not None else None
        self.content: list[dict[str, Any]] = []  # the blocks so far; the last one is complete once closed
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self._open = False
        self._pieces: list[str] = []  # the open block's text or thought, or its tool call's JSON

    def feed(self, step: Step) -> list[dict[str, Any]]:
        # A step's reasoning comes before its answer, and is never read for calls: a call written while
        # thinking is part of the thought.
        events = self._piece("thinking", step.reasoning) if step.reasoning else []
        if self._follower is None:
            return events + (self._piece("text", step.text) if step.text else [])
        return events + self._events(self._follower.feed(step))

    def finish(self, done: Done) -> list[dict[str, Any]]:
        """Close the answer: the last block, and its stop reason (and the stop string, when one ended it)."""
        events = self._events(self._follower.finish()) if self._follower is not None else []
        events += self._close()
        reason = done.finish_reason
        if self._follower is not None:
            reason = self._follower.finish_reason(reason)
        if reason == "stop" and done.stop is not None:
            self.stop_reason, self.stop_sequence = "stop_sequence", done.stop
        else:
            self.stop_reason = _STOP_REASONS.get(reason, "end_turn")
        return events

    def _events(self, deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events = []
        for delta in deltas:
            if delta.get("content"):
                events += self._piece("text", delta["content"])
            for piece in delta.get("tool_calls", ()):
                if "id" in piece:
                    events += self._start(
                        {"type": "tool_use", "id": tool_use_id(), "name": piece["function"]["name"], "input": {}}
                    )
                arguments = piece["function"]["arguments"]
                if arguments:
                    self._pieces.append(arguments)
                    events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _piece(self, kind: str, text: str) -> list[dict[str, Any]]:
        """A piece of a text block or (kind "thinking") a thinking block, opening it if it is not the open one."""
        events = [] if self._open and self.content[-1]["type"] == kind else self._start(dict(_EMPTY[kind]))
        self._pieces.append(text)
        events.append(self._delta({"type": f"{kind}_delta", kind: text}))
        return events

    def _start(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self.content.append(block)
        self._open = True
        events.append({"type": "content_block_start", "index": len(self.content) - 1, "content_block": dict(block)})
        return events

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": len(self.content) - 1, "delta": delta}

    def _close(self) -> list[dict[str, Any]]:
        if not self._open:
            return []
        block, joined = self.content[-1], "".join(self._pieces)
        events = []
        if block["type"] == "tool_use":
            block["input"] = _arguments(joined)
        else:
            block[block["type"]] = joined
        if block["type"] == "thinking":
            events.append(self._delta({"type": "signature_delta", "signature": ""}))
        self._open, self._pieces = False, []
        return events + [{"type": "content_block_stop", "index": len(self.content) - 1}]


def usage_body(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage: input_tokens counts the prompt tokens read, not those found in the cache."""
    usage = usage or Usage()
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "cache_creation_input_tokens": 0,  # no explicit cache_control: nothing is written on request
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def message_body(message_id: str, model: str, blocks: MessageBlocks | None, usage: Usage | None) -> dict[str, Any]:
    """The Message object: the whole answer, or (blocks None) message_start's empty one."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks.content if blocks is not None else [],
        "stop_reason": blocks.stop_reason if blocks is not None else None,
        "stop_sequence": blocks.stop_sequence if blocks is not None else None,
        "usage": usage_body(usage),
    }


def message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def tool_use_id() -> str:
    return f"toolu_{secrets.token_hex(12)}"


def _arguments(text: str) -> dict[str, Any]:
    # A call cut short (max_tokens) is not valid JSON yet: its tool_use carries what can be read, nothing.
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
