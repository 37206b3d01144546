"""The benchmark harness's pure parts: the SSE parser and the protocol comparison of two servers' answers."""

from __future__ import annotations

from benchmarks.harness import compare, differences, event_sequence, shape, sse_events


def test_sse_events_pairs_event_lines_with_their_data_and_stops_at_done():
    lines = [
        "event: message_start",
        'data: {"type": "message_start"}',
        "",
        'data: {"n": 1}',
        "data: [DONE]",
        "data: {}",
    ]
    assert sse_events(lines) == [("message_start", {"type": "message_start"}), (None, {"n": 1})]


def test_shape_keys_list_items_by_their_type():
    body = {"output": [{"type": "message", "text": "hi"}, {"type": "function_call", "name": "f"}]}
    assert shape(body) == {
        ".": "object",
        ".output": "array",
        ".output[message]": "object",
        ".output[message].type": "string",
        ".output[message].text": "string",
        ".output[function_call]": "object",
        ".output[function_call].type": "string",
        ".output[function_call].name": "string",
    }


def test_shape_carries_meaningful_values_and_id_prefixes():
    meaningful = frozenset({"role", "id"})
    assert shape({"role": "assistant", "id": "msg_123", "text": "x"}, meaningful) == {
        ".": "object",
        ".role": "string 'assistant'",
        ".id": "string msg_...",
        ".text": "string",
    }


def test_differences_fold_a_missing_parent_and_ignore_nulls():
    helios = {".": "object", ".usage": "object", ".usage.total": "number", ".stop": "null"}
    peer = {".": "object", ".stop": "string"}
    assert differences(helios, peer) == ["only helios: .usage (object)"]


def test_differences_name_another_meaningful_value():
    assert differences({".role": "string 'assistant'"}, {".role": "string 'user'"}) == [
        "differs: .role helios string 'assistant', llama-server string 'user'"
    ]


def test_differences_gather_folded_fields_into_one_line():
    fold = ("the request echo", lambda path, fields: path in (".top_p", ".store"))
    helios = {".": "object", ".top_p": "number", ".store": "boolean", ".extra": "string"}
    assert differences(helios, {".": "object"}, fold) == [
        "only helios: the request echo (2 fields: .store, .top_p)",
        "only helios: .extra (string)",
    ]


def test_event_sequence_folds_runs_and_shows_event_lines_that_name_another_type():
    events = [
        {"event": "a", "type": "a"},
        {"event": "delta", "type": "delta"},
        {"event": "delta", "type": "delta"},
        {"event": None, "type": "done"},
    ]
    assert event_sequence(events) == ["a", "delta", "(no event line)/done"]


def test_compare_streams_reports_an_event_type_only_one_side_sends():
    helios = {"status": 200, "events": [{"event": "ping", "type": "ping"}, {"event": "stop", "type": "stop"}]}
    peer = {"status": 200, "events": [{"event": "stop", "type": "stop"}]}
    assert compare(helios, peer) == [
        "events helios:       ping stop",
        "events llama-server: stop",
        "ping events only from helios",
    ]
