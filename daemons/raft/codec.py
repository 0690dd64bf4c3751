"""Plain-type encodings of the Raft data types, checked field by field on decode.

``encode_*`` functions return dicts of ints, bools, bytes, lists and None only, so the
transport and the write-ahead log can hand them straight to msgpack (``use_bin_type``)
and nothing ever needs pickle. ``decode_*`` functions accept exactly what the encoders
produce: every field must be present with the right type and range, unknown fields are
refused, and the first problem raises `ValueError` naming the field (dotted path, e.g.
``message.entries[3].term``), so a corrupt frame or record is rejected whole.

`encode_conf_change` / `decode_conf_change` go all the way to bytes because a
`ConfChange` travels inside an entry's ``data``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .messages import (
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

#: Terms, indexes and node ids are unsigned 64-bit on the wire (as in etcd's raftpb).
U64_MAX = 2**64 - 1
#: Upper bound on entries in one message; far above any sane batch, it bounds decode work.
MAX_ENTRIES_PER_MESSAGE = 1_000_000


def _fields(obj: Any, path: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a map, got {type(obj).__name__}")
    missing = [n for n in names if n not in obj]
    if missing:
        raise ValueError(f"{path}.{missing[0]}: missing")
    extra = [k for k in obj if k not in names]
    if extra:
        raise ValueError(f"{path}.{extra[0]!s}: unknown field")
    return obj


def _u64(value: Any, path: str, *, positive: bool = False) -> int:
    if type(value) is not int:
        raise ValueError(f"{path}: expected an integer, got {type(value).__name__}")
    low = 1 if positive else 0
    if not low <= value <= U64_MAX:
        raise ValueError(f"{path}: {value} out of range [{low}, 2**64-1]")
    return value


def _bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise ValueError(f"{path}: expected bytes, got {type(value).__name__}")
    return bytes(value)


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{path}: expected a boolean, got {type(value).__name__}")
    return value


def _enum(enum_type: Any, value: Any, path: str) -> Any:
    if type(value) is not int:
        raise ValueError(f"{path}: expected an integer, got {type(value).__name__}")
    try:
        return enum_type(value)
    except ValueError:
        raise ValueError(f"{path}: unknown {enum_type.__name__} {value}") from None


def _id_list(value: Any, path: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
    ids = tuple(_u64(v, f"{path}[{i}]", positive=True) for i, v in enumerate(value))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate node id")
    return ids


# -- Entry -------------------------------------------------------------------------------

_ENTRY_FIELDS = ("term", "index", "type", "data")


def encode_entry(entry: Entry) -> dict[str, Any]:
    return {"term": entry.term, "index": entry.index, "type": int(entry.type), "data": entry.data}


def decode_entry(obj: Any, path: str = "entry") -> Entry:
    d = _fields(obj, path, _ENTRY_FIELDS)
    return Entry(
        term=_u64(d["term"], f"{path}.term"),
        index=_u64(d["index"], f"{path}.index", positive=True),
        type=_enum(EntryType, d["type"], f"{path}.type"),
        data=_bytes(d["data"], f"{path}.data"),
    )


def decode_entries(obj: Any, path: str = "entries") -> tuple[Entry, ...]:
    """Decode a run of entries and check it is contiguous with non-decreasing terms."""
    if not isinstance(obj, list | tuple):
        raise ValueError(f"{path}: expected a list, got {type(obj).__name__}")
    if len(obj) > MAX_ENTRIES_PER_MESSAGE:
        raise ValueError(f"{path}: {len(obj)} entries exceed {MAX_ENTRIES_PER_MESSAGE}")
    entries = tuple(decode_entry(e, f"{path}[{i}]") for i, e in enumerate(obj))
    for i in range(1, len(entries)):
        if entries[i].index != entries[i - 1].index + 1:
            raise ValueError(f"{path}[{i}].index: not contiguous with the previous entry")
        if entries[i].term < entries[i - 1].term:
            raise ValueError(f"{path}[{i}].term: lower than the previous entry's term")
    return entries


# -- HardState ---------------------------------------------------------------------------

_HARD_STATE_FIELDS = ("term", "vote", "commit")


def encode_hard_state(hs: HardState) -> dict[str, Any]:
    return {"term": hs.term, "vote": hs.vote, "commit": hs.commit}


def decode_hard_state(obj: Any, path: str = "hard_state") -> HardState:
    d = _fields(obj, path, _HARD_STATE_FIELDS)
    return HardState(
        term=_u64(d["term"], f"{path}.term"),
        vote=_u64(d["vote"], f"{path}.vote"),
        commit=_u64(d["commit"], f"{path}.commit"),
    )


# -- Snapshot ----------------------------------------------------------------------------

_META_FIELDS = ("index", "term", "voters", "learners")
_SNAPSHOT_FIELDS = ("meta", "data")


def encode_snapshot(snap: Snapshot) -> dict[str, Any]:
    m = snap.meta
    return {
        "meta": {
            "index": m.index,
            "term": m.term,
            "voters": list(m.voters),
            "learners": list(m.learners),
        },
        "data": snap.data,
    }


def decode_snapshot(obj: Any, path: str = "snapshot") -> Snapshot:
    d = _fields(obj, path, _SNAPSHOT_FIELDS)
    mp = f"{path}.meta"
    md = _fields(d["meta"], mp, _META_FIELDS)
    voters = _id_list(md["voters"], f"{mp}.voters")
    learners = _id_list(md["learners"], f"{mp}.learners")
    if set(voters) & set(learners):
        raise ValueError(f"{mp}.learners: a node cannot be both voter and learner")
    meta = SnapshotMeta(
        index=_u64(md["index"], f"{mp}.index"),
        term=_u64(md["term"], f"{mp}.term"),
        voters=voters,
        learners=learners,
    )
    return Snapshot(meta=meta, data=_bytes(d["data"], f"{path}.data"))


# -- Message -----------------------------------------------------------------------------

_MESSAGE_FIELDS = (
    "type",
    "to",
    "from",
    "term",
    "log_term",
    "index",
    "entries",
    "commit",
    "reject",
    "reject_hint",
    "snapshot",
    "context",
)


def encode_message(m: Message) -> dict[str, Any]:
    return {
        "type": int(m.type),
        "to": m.to,
        "from": m.from_,
        "term": m.term,
        "log_term": m.log_term,
        "index": m.index,
        "entries": [encode_entry(e) for e in m.entries],
        "commit": m.commit,
        "reject": m.reject,
        "reject_hint": m.reject_hint,
        "snapshot": None if m.snapshot is None else encode_snapshot(m.snapshot),
        "context": m.context,
    }


def decode_message(obj: Any, path: str = "message") -> Message:
    d = _fields(obj, path, _MESSAGE_FIELDS)
    mtype = _enum(MessageType, d["type"], f"{path}.type")
    index = _u64(d["index"], f"{path}.index")
    entries = decode_entries(d["entries"], f"{path}.entries")
    if entries and mtype == MessageType.APP and entries[0].index != index + 1:
        raise ValueError(f"{path}.entries[0].index: does not follow message index {index}")
    snap_obj = d["snapshot"]
    snapshot = None if snap_obj is None else decode_snapshot(snap_obj, f"{path}.snapshot")
    if mtype == MessageType.SNAP and snapshot is None:
        raise ValueError(f"{path}.snapshot: required for a snapshot message")
    return Message(
        type=mtype,
        to=_u64(d["to"], f"{path}.to", positive=True),
        from_=_u64(d["from"], f"{path}.from", positive=True),
        term=_u64(d["term"], f"{path}.term"),
        log_term=_u64(d["log_term"], f"{path}.log_term"),
        index=index,
        entries=entries,
        commit=_u64(d["commit"], f"{path}.commit"),
        reject=_bool(d["reject"], f"{path}.reject"),
        reject_hint=_u64(d["reject_hint"], f"{path}.reject_hint"),
        snapshot=snapshot,
        context=_bytes(d["context"], f"{path}.context"),
    )


# -- ConfChange (travels as entry data) ---------------------------------------------------

_CONF_CHANGE_FIELDS = ("type", "node_id", "context")


def encode_conf_change(cc: ConfChange) -> bytes:
    return msgpack.packb(
        {"type": int(cc.type), "node_id": cc.node_id, "context": cc.context}, use_bin_type=True
    )


def decode_conf_change(data: bytes, path: str = "conf_change") -> ConfChange:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"{path}: not valid msgpack ({exc})") from None
    d = _fields(obj, path, _CONF_CHANGE_FIELDS)
    return ConfChange(
        type=_enum(ConfChangeType, d["type"], f"{path}.type"),
        node_id=_u64(d["node_id"], f"{path}.node_id", positive=True),
        context=_bytes(d["context"], f"{path}.context"),
    )
