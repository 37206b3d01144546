"""The store behind previous_response_id and GET/DELETE /v1/responses/{id}: bounded, least recently used out first."""

from __future__ import annotations

import pytest

from helios_http.responses_store import MissingResponse, ResponseStore


def response(id_: str, text: str = "answer") -> dict:
    return {"id": id_, "output": [{"id": f"msg_{id_}", "type": "message", "role": "assistant", "content": text}]}


def item(id_: str) -> dict:
    return {"id": id_, "type": "message", "role": "user", "content": [{"type": "input_text", "text": id_}]}


def test_the_least_recently_used_response_goes_first_when_the_count_is_reached():
    store = ResponseStore(max_count=2)
    store.put(response("a"), [], None)
    store.put(response("b"), [], None)
    store.get("a")  # a is now more recent than b
    store.put(response("c"), [], None)
    with pytest.raises(MissingResponse):
        store.get("b")
    assert [store.get(i).response["id"] for i in ("a", "c")] == ["a", "c"]


def test_responses_are_evicted_until_their_bytes_fit():
    store = ResponseStore(max_count=100, max_bytes=400)
    for name in "abcdef":
        store.put(response(name, "x" * 100), [], None)
    assert store.bytes <= 400 and 1 <= len(store) < 6
    store.get("f")  # the newest stays


def test_a_response_larger_than_the_whole_store_is_not_kept():
    store = ResponseStore(max_bytes=50)
    store.put(response("a", "x" * 100), [], None)
    assert len(store) == 0 and store.bytes == 0


def test_a_conversation_is_its_chain_of_inputs_and_outputs_oldest_first():
    store = ResponseStore()
    store.put(response("r1"), [item("u1")], None)
    store.put(response("r2"), [item("u2")], "r1")
    assert [i["id"] for i in store.conversation("r2")] == ["u1", "msg_r1", "u2", "msg_r2"]
    assert [i["id"] for i in store.input_items("r2")] == ["u1", "msg_r1", "u2"]


def test_a_chain_with_an_evicted_response_names_the_missing_one():
    store = ResponseStore(max_count=2)
    store.put(response("r1"), [item("u1")], None)
    store.put(response("r2"), [item("u2")], "r1")
    store.put(response("other"), [], None)  # r1 is the least recently used
    with pytest.raises(MissingResponse) as missing:
        store.conversation("r2")
    assert missing.value.args[0] == "r1"


def test_deleting_frees_its_bytes():
    store = ResponseStore()
    store.put(response("a"), [item("u")], None)
    assert store.delete("a") and store.bytes == 0 and not store.delete("a")


def test_a_store_of_size_zero_keeps_nothing():
    store = ResponseStore(max_count=0)
    store.put(response("a"), [], None)
    assert len(store) == 0
