"""The plain-type codec: round trips through msgpack, and field-named rejections."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest
from flotilla.daemons.raft import codec
from flotilla.daemons.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def wire(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


SNAP = Snapshot(SnapshotMeta(7, 3, (1, 2, 3), (4,)), b"state")
APP = Message(
    MessageType.APP,
    to=2,
    from_=1,
    term=3,
    log_term=2,
    index=5,
    entries=(Entry(2, 6, EntryType.NORMAL, b"a"), Entry(3, 7, EntryType.CONF_CHANGE, b"c")),
    commit=5,
)


def test_every_message_type_round_trips() -> None:
    for mtype in MessageType:
        m = Message(
            mtype,
            to=3,
            from_=1,
            term=9,
            index=4,
            reject=mtype is MessageType.APP_RESP,
            reject_hint=2,
            context=b"ctx",
            snapshot=SNAP if mtype is MessageType.SNAP else None,
        )
        assert codec.decode_message(wire(codec.encode_message(m))) == m
    assert codec.decode_message(wire(codec.encode_message(APP))) == APP


def test_entry_hard_state_snapshot_conf_change_round_trip() -> None:
    e = Entry(4, 10, EntryType.CONF_CHANGE, b"\x00\xff")
    assert codec.decode_entry(wire(codec.encode_entry(e))) == e
    hs = HardState(5, 2, 9)
    assert codec.decode_hard_state(wire(codec.encode_hard_state(hs))) == hs
    assert codec.decode_snapshot(wire(codec.encode_snapshot(SNAP))) == SNAP
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 4, b"http://127.0.0.4:2380")
    assert codec.decode_conf_change(codec.encode_conf_change(cc)) == cc


def _bad(mutate: Any) -> dict[str, Any]:
    d = wire(codec.encode_message(APP))
    d = copy.deepcopy(d)
    mutate(d)
    return d


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(term="3"), "message.term"),
        (lambda d: d.update(term=-1), "message.term"),
        (lambda d: d.update(term=2**64), "message.term"),
        (lambda d: d.update(term=True), "message.term"),
        (lambda d: d.update(to=0), "message.to"),
        (lambda d: d.update(type=99), "message.type"),
        (lambda d: d.pop("commit"), "message.commit"),
        (lambda d: d.update(extra=1), "message.extra"),
        (lambda d: d.update(reject=1), "message.reject"),
        (lambda d: d.update(context="text"), "message.context"),
        (lambda d: d["entries"][1].update(index=9), "message.entries[1].index"),
        (lambda d: d["entries"][1].update(term=1), "message.entries[1].term"),
        (
            lambda d: (d.update(entries=d["entries"][:1]), d["entries"][0].update(index=9)),
            "message.entries[0].index",
        ),
        (lambda d: d["entries"][0].update(type=5), "message.entries[0].type"),
        (lambda d: d["entries"][0].update(data=None), "message.entries[0].data"),
        (lambda d: d.update(entries={}), "message.entries"),
        (lambda d: d.update(type=int(MessageType.SNAP), entries=[]), "message.snapshot"),
    ],
)
def test_decode_rejects_bad_fields_naming_them(mutate: Any, field: str) -> None:
    with pytest.raises(ValueError) as err:
        codec.decode_message(_bad(mutate))
    assert str(err.value).startswith(field + ":")


def test_decode_rejects_non_map_and_bad_snapshot_membership() -> None:
    with pytest.raises(ValueError, match=r"^message: expected a map"):
        codec.decode_message([1, 2])
    d = wire(codec.encode_snapshot(SNAP))
    d["meta"]["learners"] = [3]
    with pytest.raises(ValueError, match=r"^snapshot\.meta\.learners"):
        codec.decode_snapshot(d)
    d["meta"]["learners"] = [5, 5]
    with pytest.raises(ValueError, match=r"^snapshot\.meta\.learners: duplicate"):
        codec.decode_snapshot(d)
    with pytest.raises(ValueError, match=r"^hard_state\.vote"):
        codec.decode_hard_state({"term": 1, "vote": -2, "commit": 0})


def test_conf_change_garbage_rejected() -> None:
    with pytest.raises(ValueError, match=r"^conf_change: not valid msgpack"):
        codec.decode_conf_change(b"\xc1")
    bad = msgpack.packb({"type": 7, "node_id": 1, "context": b""}, use_bin_type=True)
    with pytest.raises(ValueError, match=r"^conf_change\.type"):
        codec.decode_conf_change(bad)
    bad = msgpack.packb({"type": 0, "node_id": 0, "context": b""}, use_bin_type=True)
    with pytest.raises(ValueError, match=r"^conf_change\.node_id"):
        codec.decode_conf_change(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(codec._MESSAGE_FIELDS), inner, max_size=12)
        ),
        max_leaves=30,
    )
)
def test_decode_arbitrary_input_raises_only_value_error(obj: Any) -> None:
    try:
        m = codec.decode_message(obj)
    except ValueError:
        return
    assert codec.decode_message(codec.encode_message(m)) == m
