"""Frozen data types exchanged between the Raft core, its storage and its transport.

Everything the pure core (`core.RaftNode`) consumes or produces is one of these values:
the shell persists `Entry`, `HardState` and `Snapshot`, ships `Message` to peers, and
applies the committed entries a `Ready` hands it. They are immutable so that a value
handed out in one `Ready` can never be changed behind the shell's back, and so that the
simulation tests can hash and compare them.

Wire and disk encodings live in `codec`; nothing here knows about bytes on a socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Node id meaning "nobody": no vote cast, no known leader. Real node ids are > 0.
NONE = 0


class EntryType(enum.IntEnum):
    """What an entry's ``data`` holds."""

    NORMAL = 0  # application payload; empty data is the leader's no-op of a new term
    CONF_CHANGE = 1  # a `ConfChange` encoded with `codec.encode_conf_change`


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``term`` is the leader term that created it."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be durable before any message depending on it is sent.

    ``vote`` is the node voted for in ``term`` (`NONE` if none); ``commit`` may be
    persisted lazily (losing it only delays re-application, never breaks safety).
    """

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Position and membership a snapshot captures: the log up to ``index`` (of ``term``)."""

    index: int = 0
    term: int = 0
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Application state as of ``meta.index``; ``data`` is opaque to Raft."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


class MessageType(enum.IntEnum):
    """Raft messages. Numbers are part of the wire format: never renumber."""

    VOTE = 1  # RequestVote: index/log_term describe the candidate's last entry
    VOTE_RESP = 2  # reject=False means the vote is granted
    PRE_VOTE = 3  # like VOTE for term+1, but nobody changes term or vote (thesis 9.6)
    PRE_VOTE_RESP = 4
    APP = 5  # AppendEntries: entries follow (index, log_term); commit is the leader's
    APP_RESP = 6  # accept: index = last matching index; reject: index = rejected index,
    #               reject_hint = follower's guess of the last index that may match,
    #               log_term = term of the follower's entry at reject_hint
    HEARTBEAT = 7  # commit = min(leader commit, follower match); context = ReadIndex round
    HEARTBEAT_RESP = 8  # echoes context so the leader can count ReadIndex acks
    SNAP = 9  # InstallSnapshot: carries `snapshot`
    TIMEOUT_NOW = 10  # leadership transfer: the target campaigns at once, skipping PreVote
    TRANSFER_LEADER = 11  # ask the leader to transfer leadership to node ``index``
    PROP = 12  # proposals for the leader (term 0); entries hold the payloads
    READ_INDEX = 13  # a follower asks the leader for a read index; context identifies it
    READ_INDEX_RESP = 14  # index = the read index for context (reject=True: refused)


#: Responses to these message types must never be sent before the sender's Ready is durable.
VOTE_TYPES = frozenset({MessageType.VOTE, MessageType.PRE_VOTE})


@dataclass(frozen=True, slots=True)
class Message:
    """One peer message. Field meaning depends on ``type`` (see `MessageType`).

    ``from_`` carries a trailing underscore because ``from`` is a Python keyword; the
    codec names it ``"from"`` on the wire.
    """

    type: MessageType
    to: int
    from_: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class ConfChangeType(enum.IntEnum):
    """Single-step membership changes; at most one may be pending at a time."""

    ADD_VOTER = 0  # adds a voter, or promotes a learner to voter
    REMOVE_NODE = 1  # removes a voter or a learner
    ADD_LEARNER = 2  # adds a learner (receives the log, never votes nor counts for quorum)
    REMOVE_VOTER = 1  # alias of REMOVE_NODE for callers that think in voters


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change, carried in a `EntryType.CONF_CHANGE` entry.

    ``context`` is opaque to Raft (the store puts the new member's peer URL there).
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting (never persisted)."""

    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the local applied index reaches ``index``."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """Work the shell must do, in this order, then hand the same object to ``advance``.

    1. Persist ``snapshot`` (if not None), then ``entries`` (they replace any persisted
       entries at the same or higher index), then ``hard_state`` (if not None). When
       ``must_sync`` is true these writes must be fsynced before step 2.
    2. Send ``messages``, after that Ready's writes are durable, so no vote or
       acknowledgement can get ahead of the state it depends on. One exception: a
       leader whose term and vote are already durable may send its APP and HEARTBEAT
       messages while the write is in flight (Raft thesis 10.2.1), because nothing is
       applied before step 1 ends and follower answers are stepped only after
       ``advance`` (see ``RaftShell._send_before_persist``).
    3. Apply ``snapshot`` to the state machine (if not None), then ``committed_entries``
       in order. They may include entries of this same Ready's ``entries``, which is
       why persisting comes first. `EntryType.CONF_CHANGE` entries are applied to the
       membership by the core itself during ``advance``; the shell only records them
       (``codec.decode_conf_change`` gives the node id and opaque context). Empty
       NORMAL entries are a new leader's no-op. A snapshot with empty ``data`` at index
       1 is the bootstrap snapshot of a new cluster: the empty application state.
    4. Serve ``read_states`` once the applied index reaches each one's index.
    5. Call ``RaftNode.advance(ready)``. Messages may be stepped and ticks given between
       ``ready()`` and ``advance()``; another ``ready()`` must wait for ``advance()``.

    ``must_sync`` is False when only the commit index changed: such a write may skip the
    fsync (a lost commit index is learnt again from the leader).
    """

    entries: tuple[Entry, ...] = ()
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    soft_state: SoftState | None = None
    must_sync: bool = False

    @property
    def entries_to_persist(self) -> tuple[Entry, ...]:
        return self.entries

    @property
    def messages_to_send(self) -> tuple[Message, ...]:
        return self.messages

    @property
    def snapshot_to_persist(self) -> Snapshot | None:
        return self.snapshot


class NotLeader(Exception):
    """Raised by a proposal or read on a node that is not the leader.

    ``leader`` is the leader's id as far as this node knows, or `NONE`; the shell
    redirects the client there.
    """

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.leader = leader


class ProposalDropped(Exception):
    """The proposal cannot be accepted now (leadership transfer or a pending conf change)."""


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What storage hands back on restart to rebuild a `core.RaftNode`.

    ``entries`` must be contiguous and start right after ``snapshot.meta.index`` (or at 1
    when there is no snapshot). An empty value describes a brand-new node.
    """

    hard_state: HardState = field(default_factory=HardState)
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot = field(default_factory=Snapshot)


#: what a leader may send before its own write of the same Ready is durable
EARLY_TYPES = frozenset({MessageType.APP, MessageType.HEARTBEAT})


def early_messages(rd: Ready, leader: bool, durable_vote: tuple[int, int]) -> tuple[Message, ...]:
    """The messages of ``rd`` that may leave while its write is still in flight.

    Only a leader's appends and heartbeats, and only when the Ready changes neither term
    nor vote (``durable_vote`` is the (term, vote) already on disk) and installs no
    snapshot. Why this is safe although the leader counts its own entries toward a
    quorum as soon as it appends them: entries are applied, and clients answered, only
    after the Ready's write is durable; a follower acknowledges only after its own
    fsync; and the commit index a leader computes from those acknowledgements leaves in
    a later Ready (stepping only fills the next one), which goes out after this one's
    write. So nothing committed depends on a leader write that could still be lost.
    """
    if not leader or not rd.messages or rd.snapshot is not None:
        return ()
    hs = rd.hard_state
    if hs is not None and (hs.term, hs.vote) != durable_vote:
        return ()
    return tuple(m for m in rd.messages if m.type in EARLY_TYPES)
