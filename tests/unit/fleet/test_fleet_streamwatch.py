"""Framing of the streaming watch: events split across reads, several per read, errors."""

from __future__ import annotations

import json

import pytest
from flotilla.daemons.fleet.streamwatch import event_from_json, split_events
from flotilla.daemons.kvclient import EtcdError, EventIndexCleared
from hypothesis import given
from hypothesis import strategies as st


def event(index: int, action: str = "set") -> dict:
    return {"action": action, "node": {"key": f"/a/k{index}", "value": "é" * index,
                                       "modifiedIndex": index, "createdIndex": index}}


def test_events_back_to_back_with_and_without_newlines_all_come_out() -> None:
    text = json.dumps(event(1)) + "\n" + json.dumps(event(2)) + json.dumps(event(3)) + "\n"
    events, rest = split_events(text)
    assert [e["node"]["modifiedIndex"] for e in events] == [1, 2, 3]
    assert rest == ""


def test_an_unfinished_event_is_kept_for_the_next_read() -> None:
    whole = json.dumps(event(7))
    events, rest = split_events(json.dumps(event(6)) + "\n" + whole[:10])
    assert [e["node"]["modifiedIndex"] for e in events] == [6]
    assert rest == whole[:10]
    events, rest = split_events(rest + whole[10:])
    assert [e["node"]["modifiedIndex"] for e in events] == [7] and rest == ""


@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8),
       st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_any_chunking_yields_the_same_events_in_order(indices: list[int],
                                                      cuts: list[int]) -> None:
    text = "\n".join(json.dumps(event(i)) for i in indices) + "\n"
    got: list[int] = []
    pending, position = "", 0
    for cut in [*cuts, len(text)]:
        chunk, position = text[position:position + cut], position + cut
        events, pending = split_events(pending + chunk)
        got += [e["node"]["modifiedIndex"] for e in events]
    assert got == indices and pending == ""


def test_a_stream_item_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected an event object"):
        split_events("[1, 2]")


def test_event_from_json_builds_the_response() -> None:
    response = event_from_json({**event(5, "expire"), "prevNode": event(4)["node"]})
    assert response.action == "expire"
    assert response.node.key == "/a/k5" and response.node.modified_index == 5
    assert response.prev_node is not None and response.prev_node.key == "/a/k4"
    assert response.etcd_index == 5


def test_a_cleared_history_error_asks_for_a_relist() -> None:
    with pytest.raises(EventIndexCleared):
        event_from_json({"errorCode": 401, "message": "The event in requested index is "
                         "outdated and cleared", "cause": "the requested history has been "
                         "cleared [2/1]", "index": 1001})


def test_other_store_errors_and_malformed_items_raise() -> None:
    with pytest.raises(EtcdError) as raised:
        event_from_json({"errorCode": 300, "message": "Raft Internal Error", "index": 3})
    assert raised.value.error_code == 300
    with pytest.raises(ValueError, match="not an event"):
        event_from_json({"action": "set"})
