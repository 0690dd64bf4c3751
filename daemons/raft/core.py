"""The Raft state machine (API surface; the implementation follows in this module).

`RaftNode` is pure: no I/O, no clock, no event loop, no module-level randomness. The
shell drives it with ``tick()`` (one logical clock tick), ``step(message)`` and the
proposal calls, then collects a `Ready`, persists, sends, applies and calls
``advance(ready)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from .messages import ConfChange, Message, PersistedState, Ready, Role


@dataclass(frozen=True, slots=True)
class Config:
    """Tunables. Ticks are abstract; the shell decides how long one tick is."""

    election_tick: int = 10
    heartbeat_tick: int = 1
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0  # 0 means no byte limit
    max_size_per_msg: int = 1024 * 1024
    check_quorum: bool = True
    pre_vote: bool = True


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    leader: int
    role: Role
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    last_index: int
    first_index: int
    progress: dict[int, tuple[str, int, int]]  # id -> (state, match, next), leader only
    lead_transferee: int


class RaftNode:
    """One Raft participant.

    ``peers``/``learners`` give the membership of a brand-new cluster; when ``persisted``
    holds a snapshot, the snapshot's membership wins. ``applied`` is the index the
    application has already applied (defaults to the snapshot index: the application
    replays entries after its snapshot on restart).
    """

    def __init__(
        self,
        node_id: int,
        *,
        peers: Iterable[int],
        learners: Iterable[int] = (),
        persisted: PersistedState | None = None,
        config: Config | None = None,
        rng: random.Random,
        applied: int | None = None,
    ) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Advance the logical clock by one tick (elections, heartbeats, quorum checks)."""

    def step(self, message: Message) -> None:
        """Process one message from a peer. Stale or malformed-in-context ones are dropped."""

    def campaign(self) -> None:
        """Start an election now (used to bootstrap a single-node cluster quickly)."""

    def propose(self, data: bytes) -> int:
        """Append ``data`` on the leader and return its log index.

        Followers refuse with `messages.NotLeader` carrying the leader's id so the shell
        can redirect the client; `messages.ProposalDropped` during a leadership transfer.
        The index is "acknowledged" only once a Ready lists it in ``committed_entries``.
        """
        raise NotImplementedError

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Like ``propose`` for a membership change; refused while another is pending."""
        raise NotImplementedError

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a later Ready carries ReadState(index, context)."""

    def transfer_leadership(self, target: int) -> None:
        """Ask the leader to hand leadership to ``target`` once it is caught up."""

    def compact(self, index: int, snapshot_data: bytes) -> None:
        """Record a snapshot of the applied state at ``index`` and drop the log before it."""

    def has_ready(self) -> bool:
        raise NotImplementedError

    def ready(self) -> Ready:
        raise NotImplementedError

    def advance(self, ready: Ready) -> None:
        """Acknowledge that ``ready`` was persisted, sent and applied."""

    def status(self) -> Status:
        raise NotImplementedError
