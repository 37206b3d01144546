"""A response's output items, built step by step from the engine's events, with the stream events that say so.

One builder serves both answers: a stream sends the events it returns, a whole response keeps
only `output`. A served reasoning model's reasoning section becomes a `reasoning` item with one
`reasoning_text` part (the shape OpenAI's open-weight models answer in; no summary, nothing
encrypted); the answer's text becomes a `message` item with one `output_text` part; with tools
offered, the answer goes through tools.CallFollower first, and each call becomes a
`function_call` item. Items are opened when their first piece arrives and closed when the next
item starts or the answer ends, so the events come in OpenAI's order:

    output_item.added, content_part.added, reasoning_text.delta..., reasoning_text.done,
    content_part.done, output_item.done (the reasoning, when there is some); then
    output_item.added, content_part.added, output_text.delta..., output_text.done,
    content_part.done, output_item.done; then per call output_item.added,
    function_call_arguments.delta..., function_call_arguments.done, output_item.done.
"""

from __future__ import annotations

from typing import Any

from helios_core.generate import Step
from helios_core.vocab import Vocab
from helios_http import shapes, tools
from helios_http.responses_items import new_item_id

Event = dict[str, Any]


class OutputBuilder:
    """The output items of one answer. plan: its tool plan (None: text only); vocab: set when logprobs are wanted."""

    def __init__(self, plan: tools.ToolPlan | None, vocab: Vocab | None = None):
        self._follower = tools.CallFollower(plan) if plan is not None else None
        self._vocab = vocab
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item still receiving pieces

    def step(self, step: Step) -> list[Event]:
        """The events one generated step settles: its reasoning first, then its answer."""
        # Reasoning is never read for calls: a call written while thinking is part of the thought.
        events = self._reasoning_delta(step.reasoning) if step.reasoning else []
        deltas = self._follower.feed(step) if self._follower else ([{"content": step.text}] if step.text else [])
        # output_text's logprobs are the answer's; the reasoning's tokens have no place in this API.
        logprobs = shapes.chat_logprobs(self._vocab, [step])["content"] if self._vocab is not None else []
        return events + self._apply(deltas, logprobs)

    def finish(self, finish_reason: str | None) -> list[Event]:
        """The events that close the answer; an answer with no output at all still gets its (empty) message."""
        events = self._apply(self._follower.finish() if self._follower else [], [])
        if not self.output:
            events += self._open_message()
        return events + self._close("incomplete" if finish_reason == "length" else "completed")

    # --- items ---------------------------------------------------------------------------------

    def _apply(self, deltas: list[dict[str, Any]], logprobs: list[dict]) -> list[Event]:
        events: list[Event] = []
        for delta in deltas:
            if "content" in delta:
                if self._open is None or self._open["type"] != "message":
                    events += self._close("completed") + self._open_message()
                events.append(self._text_delta(delta["content"], logprobs))
                logprobs = []  # a step's logprobs ride on its first text delta
            for piece in delta.get("tool_calls", ()):
                if "id" in piece:  # a call starts: the item before it is done
                    events += self._close("completed") + self._open_call(piece)
                else:
                    events.append(self._arguments_delta(piece["function"]["arguments"]))
        return events

    def _open_message(self) -> list[Event]:
        item = {
            "id": new_item_id("msg"),
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        return self._open_with_part(item, {"type": "output_text", "annotations": [], "logprobs": [], "text": ""})

    def _open_reasoning(self) -> list[Event]:
        item = {
            "id": new_item_id("rs"),
            "type": "reasoning",
            "summary": [],
            "content": [],
            "encrypted_content": None,
            "status": "in_progress",
        }
        return self._open_with_part(item, {"type": "reasoning_text", "text": ""})

    def _open_with_part(self, item: dict[str, Any], part: dict[str, Any]) -> list[Event]:
        self._add(item)
        item["content"].append(part)
        return [
            self._event("response.output_item.added", item=_copy(item, content=[])),
            self._event("response.content_part.added", item_id=item["id"], content_index=0, part=dict(part)),
        ]

    def _open_call(self, piece: dict[str, Any]) -> list[Event]:
        call_id = piece["id"]
        item = {
            "id": "fc_" + call_id.removeprefix("call_"),
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call_id,
            "name": piece["function"]["name"],
        }
        self._add(item)
        return [self._event("response.output_item.added", item=dict(item))]

    def _add(self, item: dict[str, Any]) -> None:
        self._open = item
        self.output.append(item)

    def _text_delta(self, text: str, logprobs: list[dict]) -> Event:
        part = self._open["content"][0]
        part["text"] += text
        part["logprobs"] = part["logprobs"] + logprobs  # a new list: events already built keep theirs
        return self._event(
            "response.output_text.delta", item_id=self._open["id"], content_index=0, delta=text, logprobs=logprobs
        )

    def _reasoning_delta(self, text: str) -> list[Event]:
        opened = self._open is not None and self._open["type"] == "reasoning"
        events = [] if opened else self._close("completed") + self._open_reasoning()
        self._open["content"][0]["text"] += text
        return events + [
            self._event("response.reasoning_text.delta", item_id=self._open["id"], content_index=0, delta=text)
        ]

    def _arguments_delta(self, text: str) -> Event:
        self._open["arguments"] += text
        return self._event("response.function_call_arguments.delta", item_id=self._open["id"], delta=text)

    def _close(self, status: str) -> list[Event]:
        item, self._open = self._open, None
        if item is None:
            return []
        item["status"] = status
        events = []
        if item["type"] in ("message", "reasoning"):
            part = item["content"][0]
            if item["type"] == "message":
                done = self._event("response.output_text.done", text=part["text"], logprobs=part["logprobs"])
            else:
                done = self._event("response.reasoning_text.done", text=part["text"])
            events += [
                {**done, "item_id": item["id"], "content_index": 0},
                self._event("response.content_part.done", item_id=item["id"], content_index=0, part=dict(part)),
            ]
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        return events + [self._event("response.output_item.done", item=_copy(item))]

    def _event(self, kind: str, **fields: Any) -> Event:
        # Every event names the item it belongs to by its place in `output`, as OpenAI's do.
        return {"type": kind, "output_index": len(self.output) - 1, **fields}


def _copy(item: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A snapshot of an item as it is now: later pieces must not change an event already built."""
    copied = {**item, **changes}
    if "content" in copied:
        copied["content"] = [dict(part) for part in copied["content"]]
    return copied
