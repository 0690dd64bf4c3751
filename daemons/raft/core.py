"""The Raft state machine: elections, replication, reads, snapshots, membership.

`RaftNode` is pure. It does no I/O, reads no clock and owns no event loop; its only
source of randomness is the `random.Random` it is given (for election timeouts), so the
same inputs always produce the same outputs. The shell drives it with ``tick()`` (one
logical clock tick), ``step(message)`` and the proposal calls, then collects a `Ready`,
persists, sends, applies and calls ``advance(ready)`` (see `messages.Ready` for the
order and the rule that every message waits for its Ready's writes to be durable).

Behaviour follows etcd's raft package (the reference shape for a RawNode-style core):
PreVote, CheckQuorum (a leader that has not heard from a quorum within an election
timeout steps down; followers that heard from a leader recently ignore vote requests),
fast log backtracking, probe/replicate/snapshot flow control, ReadIndex, single-step
membership changes taking effect when applied, learners and leadership transfer.

Choices made here:

* Proposals on a follower raise `NotLeader` with the leader's id (no silent forwarding:
  the shell redirects the client, which keeps "acknowledged" unambiguous). A ``PROP``
  message arriving at the leader is still accepted, for shells that forward.
* A brand-new cluster starts from a synthetic snapshot at index 1 (term 1, empty data)
  holding the initial membership, identical on every member; a node joining later
  receives it (or a later snapshot) and then the log, like any lagging follower.
* Appends and read heartbeats are produced when the Ready is collected, so many
  proposals (and many reads) made between two Readies share one message per follower.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass

from .codec import decode_conf_change, encode_conf_change
from .log import RaftLog
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeader,
    PersistedState,
    ProposalDropped,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from .progress import Progress, ProgressState
from .readonly import ReadOnly

MT = MessageType

#: Vote requests carrying this context come from a leadership transfer and bypass the
#: CheckQuorum lease (the old leader itself asked for the election).
TRANSFER_CONTEXT = b"transfer"
#: Index of the synthetic snapshot that carries a new cluster's initial membership.
BOOTSTRAP_INDEX = 1


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
    #: a learner is promoted to voter only once it is at most this many entries behind
    max_learner_lag: int = 1000

    def validate(self) -> None:
        if self.heartbeat_tick < 1:
            raise ValueError("heartbeat_tick: must be >= 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick: must be greater than heartbeat_tick")
        if self.max_inflight_msgs < 1:
            raise ValueError("max_inflight_msgs: must be >= 1")
        if self.max_inflight_bytes < 0:
            raise ValueError("max_inflight_bytes: must be >= 0")
        if self.max_size_per_msg < 0:
            raise ValueError("max_size_per_msg: must be >= 0")


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
    first_index: int
    last_index: int
    progress: dict[int, tuple[str, int, int]]  # id -> (state, match, next); leader only
    lead_transferee: int


def _entry_size(e: Entry) -> int:
    return len(e.data) + 16


class RaftNode:
    """One Raft participant.

    ``peers``/``learners`` describe a brand-new cluster and are used only when
    ``persisted`` is empty (a node joining an existing cluster passes no peers and learns
    the membership from the leader). ``applied`` is the index the application has
    already applied and kept (default: the snapshot index, i.e. the application replays
    every entry after its snapshot on restart).
    """

    def __init__(
        self,
        node_id: int,
        *,
        peers: Iterable[int] = (),
        learners: Iterable[int] = (),
        persisted: PersistedState | None = None,
        config: Config | None = None,
        rng: random.Random,
        applied: int | None = None,
    ) -> None:
        if node_id <= 0:
            raise ValueError("node_id: must be > 0")
        self.id = node_id
        self.cfg = config or Config()
        self.cfg.validate()
        self.rng = rng
        persisted = persisted or PersistedState()
        hs = persisted.hard_state
        self.term = hs.term
        self.vote = hs.vote
        self.log = RaftLog(persisted.snapshot, persisted.entries, hs.commit)
        self.voters: set[int] = set(persisted.snapshot.meta.voters)
        self.learners: set[int] = set(persisted.snapshot.meta.learners)
        #: (applied index, voters, learners) after each applied change, for snapshots
        self.conf_history: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = [
            (self.log.offset, tuple(sorted(self.voters)), tuple(sorted(self.learners)))
        ]
        fresh = hs == HardState() and not persisted.entries and persisted.snapshot.is_empty
        peers_t = tuple(sorted(set(peers)))
        learners_t = tuple(sorted(set(learners) - set(peers_t)))
        if fresh and peers_t:
            self._bootstrap(peers_t, learners_t)

        self.lead = NONE
        self.role = Role.FOLLOWER
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.votes: dict[int, bool] = {}
        self.election_sets: list[set[int]] = []
        self.progress: dict[int, Progress] = {}
        self.pending_conf_index = 0
        self.lead_transferee = NONE
        self.read_only = ReadOnly()
        #: reads that arrived before the leader committed an entry of its own term
        self.pending_reads: list[tuple[bytes, int]] = []
        self.read_states: list[ReadState] = []
        self.msgs: list[Message] = []
        self.append_wanted = False
        self.prev_hard = hs  # what storage holds; the bootstrap state differs from it
        self.prev_soft = SoftState(NONE, Role.FOLLOWER)
        self.in_ready = False
        self._reset_randomized_timeout()
        if applied is not None and applied > self.log.applied and not fresh:
            if applied > self.log.last_index():
                raise ValueError(f"applied: {applied} beyond last entry {self.log.last_index()}")
            # Applied entries were committed, even if that commit index was not fsynced.
            self.log.commit_to(applied)
            for e in self.log.next_committed(applied):
                if e.type is EntryType.CONF_CHANGE:
                    self._apply_conf_change(e)
            self.log.applied = applied

    def _bootstrap(self, peers: tuple[int, ...], learners: tuple[int, ...]) -> None:
        # The initial membership must appear at once: a node that learnt "add 1" but not
        # yet "add 2" would believe it is alone and elect itself. So every initial member
        # starts from the same synthetic snapshot at index 1, term 1, with empty
        # application data, and a joiner receives that snapshot like any other.
        snap = Snapshot(SnapshotMeta(BOOTSTRAP_INDEX, 1, peers, learners), b"")
        self.term = 1
        self.log.restore(snap)
        self.voters = set(peers)
        self.learners = set(learners)
        self.conf_history = [(BOOTSTRAP_INDEX, peers, learners)]

    # -- public API ----------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the logical clock by one tick (elections, heartbeats, quorum checks)."""
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self._promotable() and self.election_elapsed >= self.randomized_timeout:
                self.election_elapsed = 0
                self._hup(transfer=False)

    def campaign(self) -> None:
        """Start an election now (e.g. to bootstrap a single-node cluster at once)."""
        if self.role is not Role.LEADER:
            self._hup(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append ``data`` on the leader and return its log index.

        Followers refuse with `NotLeader` (carrying the leader's id so the shell can
        redirect); `ProposalDropped` during a leadership transfer. The proposal is
        acknowledged only once a Ready lists its index in ``committed_entries`` with the
        same term: a leader change can still replace an uncommitted entry.
        """
        return self.propose_many([data])[-1]

    def propose_many(self, payloads: list[bytes]) -> list[int]:
        """Propose several payloads at once; returns their indexes (same rules)."""
        self._check_can_propose()
        return self._append_entries([(EntryType.NORMAL, bytes(p)) for p in payloads])

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a membership change; refused while an earlier one is not yet applied."""
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                f"a membership change is pending (index {self.pending_conf_index}, "
                f"applied {self.log.applied})"
            )
        if cc.node_id <= 0:
            raise ValueError("node_id: must be > 0")
        if cc.type is ConfChangeType.REMOVE_NODE and self.voters == {cc.node_id}:
            raise ValueError("node_id: cannot remove the last voter")
        if cc.type is ConfChangeType.ADD_LEARNER and cc.node_id == self.id:
            raise ValueError("node_id: the leader cannot demote itself to learner")
        if cc.type is ConfChangeType.ADD_VOTER and cc.node_id in self.learners:
            # A learner votes only once it has caught up, so promoting it cannot stall
            # commits behind a voter that is still far behind.
            pr = self.progress.get(cc.node_id)
            match = pr.match if pr is not None else 0
            if match + self.cfg.max_learner_lag < self.log.committed:
                raise ProposalDropped(
                    f"learner {cc.node_id} has not caught up (match {match}, "
                    f"commit {self.log.committed}); retry later"
                )
        index = self._append_entries([(EntryType.CONF_CHANGE, encode_conf_change(cc))])[0]
        self.pending_conf_index = index
        return index

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a later Ready carries ``ReadState(index, context)``.

        Serve the read once the applied index reaches that index. On a follower the
        request goes to the leader (`NotLeader` if none is known).
        """
        if self.role is Role.LEADER:
            self._leader_read(bytes(context), self.id)
        elif self.lead != NONE:
            self._send(Message(MT.READ_INDEX, to=self.lead, from_=self.id, context=context))
        else:
            raise NotLeader(NONE)

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to ``target`` once it is caught up (aborts after a timeout)."""
        if self.role is Role.LEADER:
            self._leader_transfer(target)
        elif self.lead != NONE:
            self._send(Message(MT.TRANSFER_LEADER, to=self.lead, from_=self.id, index=target))
        else:
            raise NotLeader(NONE)

    def compact(self, index: int, snapshot_data: bytes) -> Snapshot:
        """Snapshot the applied state at ``index`` and drop the log up to it.

        ``snapshot_data`` is the application's state as of ``index`` (which must be
        applied). Returns the `Snapshot` (with the membership at ``index``); the shell
        persists it and then drops the same prefix from its own log.
        """
        if not self.log.offset < index <= self.log.applied:
            raise ValueError(
                f"index: {index} must be in ({self.log.offset}, applied {self.log.applied}]"
            )
        term = self.log.term(index)
        assert term is not None
        voters: tuple[int, ...] = ()
        learners: tuple[int, ...] = ()
        for at, v, lrn in self.conf_history:
            if at <= index:
                voters, learners = v, lrn
        snap = Snapshot(SnapshotMeta(index, term, voters, learners), bytes(snapshot_data))
        self.log.compact(snap)
        keep = [c for c in self.conf_history if c[0] > index]
        self.conf_history = [(index, voters, learners), *keep]
        return snap

    def report_snapshot(self, to: int, success: bool) -> None:
        """Optional hint from the shell that sending a snapshot to ``to`` finished/failed."""
        pr = self.progress.get(to)
        if self.role is Role.LEADER and pr and pr.state is ProgressState.SNAPSHOT:
            if not success:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for the follower's answer or the next heartbeat

    def has_ready(self) -> bool:
        if self.in_ready:
            return False
        self._flush()
        log = self.log
        return bool(
            self.msgs
            or self.read_states
            or log.pending_snapshot is not None
            or log.unstable_from <= log.last_index()
            or log.committed > log.applied
            or self._hard_state() != self.prev_hard
            or SoftState(self.lead, self.role) != self.prev_soft
        )

    def ready(self) -> Ready:
        """Collect pending work. Call ``advance`` with the result before the next one."""
        if self.in_ready:
            raise RuntimeError("ready() called again before advance()")
        self._flush()
        log = self.log
        hs = self._hard_state()
        soft = SoftState(self.lead, self.role)
        entries = log.unstable_entries()
        rd = Ready(
            entries=entries,
            hard_state=hs if hs != self.prev_hard else None,
            snapshot=log.pending_snapshot,
            messages=tuple(self.msgs),
            committed_entries=log.next_committed(),
            read_states=tuple(self.read_states),
            soft_state=soft if soft != self.prev_soft else None,
            must_sync=bool(entries)
            or log.pending_snapshot is not None
            or hs.term != self.prev_hard.term
            or hs.vote != self.prev_hard.vote,
        )
        self.msgs = []
        self.read_states = []
        self.prev_hard = hs
        self.prev_soft = soft
        self.in_ready = True
        return rd

    def advance(self, ready: Ready) -> None:
        """The shell persisted, sent and applied ``ready``."""
        if not self.in_ready:
            raise RuntimeError("advance() without a pending ready()")
        self.in_ready = False
        log = self.log
        if ready.snapshot is not None:
            if log.pending_snapshot is ready.snapshot:
                log.pending_snapshot = None
            log.applied = max(log.applied, ready.snapshot.meta.index)
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        for e in ready.committed_entries:
            if e.index <= log.applied or e.index <= log.offset:
                continue  # superseded by a snapshot installed meanwhile
            log.applied = e.index
            if e.type is EntryType.CONF_CHANGE:
                self._apply_conf_change(e)

    def status(self) -> Status:
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            leader=self.lead,
            role=self.role,
            voters=tuple(sorted(self.voters)),
            learners=tuple(sorted(self.learners)),
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            progress={i: p.describe() for i, p in sorted(self.progress.items())}
            if self.role is Role.LEADER
            else {},
            lead_transferee=self.lead_transferee,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _promotable(self) -> bool:
        return self.id in self.voters

    def _reset_randomized_timeout(self) -> None:
        et = self.cfg.election_tick
        self.randomized_timeout = et + self.rng.randrange(et)

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.progress = {}
        self.lead_transferee = NONE
        self.read_only.reset()
        self.pending_reads = []
        self.append_wanted = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-election must not disturb anyone.
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE
        self.progress = {}
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        last = self.log.last_index()
        for node in sorted(self.voters | self.learners):
            self.progress[node] = self._new_progress(node, last + 1)
        me = self.progress.get(self.id)
        if me is not None:
            me.match = last
            me.recent_active = True
            me.become_replicate()
        # Refuse membership changes until our own first entry is applied: that settles any
        # change an earlier leader left behind, and a leader must commit in its own term
        # before changing membership (the single-server change fix from Ongaro's list post).
        self.pending_conf_index = self._append_entries([(EntryType.NORMAL, b"")])[0]

    def _new_progress(self, node: int, next_index: int) -> Progress:
        return Progress(
            next_index,
            self.cfg.max_inflight_msgs,
            self.cfg.max_inflight_bytes,
            learner=node in self.learners,
        )

    def _has_unapplied_conf_change(self) -> bool:
        return any(e.type is EntryType.CONF_CHANGE for e in self.log.next_committed())

    def _hup(self, *, transfer: bool) -> None:
        if self.role is Role.LEADER or not self._promotable():
            return
        if self._has_unapplied_conf_change():
            return  # our view of the membership may be stale; wait until applied
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
            vote_type = MT.PRE_VOTE
        else:
            self._become_candidate()
            term = self.term
            vote_type = MT.VOTE
        self.election_sets = self._election_voter_sets()
        self.votes[self.id] = True
        if self._tally() == "won":
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return
        ctx = TRANSFER_CONTEXT if transfer else b""
        for node in sorted(set().union(*self.election_sets)):
            if node == self.id:
                continue
            self._send(
                Message(
                    vote_type,
                    to=node,
                    from_=self.id,
                    term=term,
                    log_term=self.log.last_term(),
                    index=self.log.last_index(),
                    context=ctx,
                )
            )

    def _election_voter_sets(self) -> list[set[int]]:
        """Voter sets whose majorities an election must win.

        Membership takes effect when applied, so a node that lags in applying may hold a
        stale view while newer changes already sit in its log. Winning a majority of the
        applied membership *and* of the newest membership in the log overlaps with any
        majority a rival could win under either (single-step changes overlap pairwise).
        """
        voters = set(self.voters)
        learners = set(self.learners)
        changed = False
        lo = max(self.log.applied, self.log.offset) + 1
        for e in (
            self.log.slice(lo, self.log.last_index() + 1) if lo <= self.log.last_index() else ()
        ):
            if e.type is EntryType.CONF_CHANGE:
                _change_membership(voters, learners, decode_conf_change(e.data))
                changed = True
        if changed and voters != self.voters:
            return [set(self.voters), voters]
        return [set(self.voters)]

    def _tally(self) -> str:
        results = []
        for voters in self.election_sets:
            granted = sum(1 for n, v in self.votes.items() if v and n in voters)
            rejected = sum(1 for n, v in self.votes.items() if not v and n in voters)
            q = len(voters) // 2 + 1
            if rejected > len(voters) - q:
                return "lost"
            results.append(granted >= q)
        return "won" if all(results) else "pending"

    # -- step ------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message from a peer. Stale or out-of-context messages are dropped."""
        if m.to != self.id:
            return
        if m.term == 0:
            # Only requests (PROP, READ_INDEX, TRANSFER_LEADER) may come without a term.
            if m.type not in (MT.PROP, MT.READ_INDEX, MT.TRANSFER_LEADER):
                return
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and not force:
                    return  # we heard from a live leader recently: ignore the disruption
            if m.type is MT.PRE_VOTE:
                pass  # never change term on a pre-vote
            elif m.type is MT.PRE_VOTE_RESP and not m.reject:
                pass  # granted pre-votes carry the future term; counted below
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self._become_follower(m.term, m.from_)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APP,
            ):
                # A stale leader (e.g. back from a partition) learns our term and steps
                # down, instead of our pre-votes being ignored by its followers forever.
                self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id, term=self.term))
            elif m.type is MT.PRE_VOTE:
                self._send(
                    Message(
                        MT.PRE_VOTE_RESP, to=m.from_, from_=self.id, term=self.term, reject=True
                    )
                )
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type is MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, to=m.from_, from_=self.id, term=m.term))
            if m.type is MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(Message(resp, to=m.from_, from_=self.id, term=self.term, reject=True))

    # -- leader ------------------------------------------------------------------------------

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = sum(
                    1
                    for n, p in self.progress.items()
                    if n in self.voters and (p.recent_active or n == self.id)
                )
                for n, p in self.progress.items():
                    if n != self.id:
                        p.recent_active = False
                if active < self._quorum():
                    self._become_follower(self.term, NONE)
                    return
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer timed out; accept proposals again
        for p in self.progress.values():
            if p.state is ProgressState.SNAPSHOT:
                p.snapshot_elapsed += 1
                if p.snapshot_elapsed >= 2 * self.cfg.election_tick:
                    p.become_probe()  # the snapshot was probably lost: try again
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.start_round(self.id) or b"")

    def _bcast_heartbeat(self, context: bytes) -> None:
        for node in sorted(self.progress):
            if node == self.id:
                continue
            pr = self.progress[node]
            self._send(
                Message(
                    MT.HEARTBEAT,
                    to=node,
                    from_=self.id,
                    term=self.term,
                    commit=min(pr.match, self.log.committed),
                    context=context,
                )
            )

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.id not in self.progress:
            raise NotLeader(NONE)  # removed from the cluster
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")

    def _append_entries(self, items: list[tuple[EntryType, bytes]]) -> list[int]:
        start = self.log.last_index() + 1
        entries = [
            Entry(self.term, start + k, etype, data) for k, (etype, data) in enumerate(items)
        ]
        last = self.log.append(entries)
        me = self.progress.get(self.id)
        if me is not None:
            me.maybe_update(last)
        self._maybe_commit()
        self.append_wanted = True
        return [e.index for e in entries]

    def _flush(self) -> None:
        """Turn pending work into messages: one append per follower, one read round."""
        if self.role is not Role.LEADER:
            return
        if self.append_wanted:
            self.append_wanted = False
            self._bcast_append()
        ctx = self.read_only.start_round(self.id)
        if ctx is not None:
            self._bcast_heartbeat(ctx)

    def _bcast_append(self) -> None:
        for node in sorted(self.progress):
            if node != self.id and self._send_append(node):
                # fill the in-flight window when the follower is being replicated to
                while self.progress[node].state is ProgressState.REPLICATE and (
                    self._send_append(node, send_if_empty=False)
                ):
                    pass

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None or prev < log.offset:
            return self._send_snapshot(to, pr)
        entries = (
            log.slice(pr.next, log.last_index() + 1, self.cfg.max_size_per_msg)
            if pr.next <= log.last_index()
            else []
        )
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APP,
                to=to,
                from_=self.id,
                term=self.term,
                log_term=prev_term,
                index=prev,
                entries=tuple(entries),
                commit=log.committed,
            )
        )
        if pr.state is ProgressState.REPLICATE:
            if entries:
                last = entries[-1].index
                pr.next = last + 1
                pr.inflights.add(last, sum(_entry_size(e) for e in entries))
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a large snapshot to a node that may be down
        snap = self.log.snapshot
        self._send(Message(MT.SNAP, to=to, from_=self.id, term=self.term, snapshot=snap))
        pr.become_snapshot(snap.meta.index)
        return True

    def _maybe_commit(self) -> bool:
        matches = sorted(
            (p.match for n, p in self.progress.items() if n in self.voters), reverse=True
        )
        if not matches or len(matches) < self._quorum():
            return False
        index = matches[self._quorum() - 1]
        # Only entries of the current term are committed by counting replicas (Raft 5.4.2).
        if index > self.log.committed and self.log.term(index) == self.term:
            self.log.commit_to(index)
            self._on_commit_in_term()
            return True
        return False

    def _on_commit_in_term(self) -> None:
        self.append_wanted = True  # followers learn the new commit index
        if self.pending_reads:
            waiting, self.pending_reads = self.pending_reads, []
            for ctx, requester in waiting:
                self._leader_read(ctx, requester)

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read(self, ctx: bytes, requester: int) -> None:
        if not self._committed_in_term():
            self.pending_reads.append((ctx, requester))
            return
        index = self.log.committed
        if self.voters == {self.id}:
            self._deliver_read(index, ctx, requester)
            return
        self.read_only.add(index, ctx, requester)

    def _deliver_read(self, index: int, ctx: bytes, requester: int) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESP,
                    to=requester,
                    from_=self.id,
                    term=self.term,
                    index=index,
                    context=ctx,
                )
            )

    def _leader_transfer(self, target: int) -> None:
        if target == self.id or target not in self.voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=target, from_=self.id, term=self.term))
        else:
            self._send_append(target)

    def _step_leader(self, m: Message) -> None:
        if m.type is MT.PROP:
            try:
                self._check_can_propose()
            except (NotLeader, ProposalDropped):
                return
            normal = [(EntryType.NORMAL, e.data) for e in m.entries
                      if e.type is not EntryType.CONF_CHANGE]
            if normal:
                self._append_entries(normal)
            for e in m.entries:
                if e.type is EntryType.CONF_CHANGE:
                    # A follower's forwarded membership change gets the same checks as a
                    # local one; a refused one is dropped and its proposer times out.
                    with contextlib.suppress(ProposalDropped, ValueError):
                        self.propose_conf_change(decode_conf_change(e.data, "prop.entry"))
            return
        if m.type is MT.READ_INDEX:
            self._leader_read(m.context, m.from_)
            return
        if m.type is MT.TRANSFER_LEADER:
            self._leader_transfer(m.index)
            return
        pr = self.progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        if m.type is MT.APP_RESP:
            self._handle_app_resp(m, pr)
        elif m.type is MT.HEARTBEAT_RESP:
            self._handle_heartbeat_resp(m, pr)

    def _handle_app_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.from_)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if pr.state is ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        # A commit advance sets append_wanted: followers hear of it in the next flush.
        if not self._maybe_commit() and old_paused:
            self._send_append(m.from_)
        while self._send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=m.from_, from_=self.id, term=self.term))

    def _handle_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first()
        if pr.match < self.log.last_index():
            self._send_append(m.from_)
        if m.context and m.from_ in self.voters:
            number = self.read_only.ack(m.context, m.from_)
            if number is not None:
                acked = self.read_only.acks.get(number, set())
                if len(acked & self.voters) >= self._quorum():
                    for r in self.read_only.release(number):
                        self._deliver_read(r.index, r.context, r.requester)

    # -- candidate and follower ------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self._become_follower(m.term, m.from_)
            self._step_follower(m)
            return
        wanted = MT.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type is not wanted:
            return
        self.votes.setdefault(m.from_, not m.reject)
        result = self._tally()
        if result == "won":
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
                self._flush()
        elif result == "lost":
            self._become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append(m)
        elif t is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(
                Message(
                    MT.HEARTBEAT_RESP, to=m.from_, from_=self.id, term=self.term, context=m.context
                )
            )
        elif t is MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t is MT.TIMEOUT_NOW:
            if self._promotable():
                self._hup(transfer=True)
        elif t is MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif t in (MT.TRANSFER_LEADER, MT.PROP) and self.lead not in (NONE, m.from_):
            # A request that reached a follower (it was sent to this node while it led):
            # pass it on to the leader we know, *as ourselves*. Every message a node emits
            # names it as the sender: the transport checks that against the connection's
            # hello and drops the whole connection otherwise, losing everything queued
            # behind it. A leader does not care who hands it a proposal.
            self._send(
                Message(t, to=self.lead, from_=self.id, index=m.index, entries=m.entries)
            )
        # A READ_INDEX from another node is not passed on: its answer must go back to the
        # requester, which this node cannot send for it; the requester asks again of the
        # leader it learns about next (the shell re-asks reads on every change of leader).

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(
                Message(MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(
                Message(MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=last_new)
            )
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self._send(
            Message(
                MT.APP_RESP,
                to=m.from_,
                from_=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        snap = m.snapshot
        meta = snap.meta
        log = self.log
        installed = False
        if meta.index > log.committed:
            if log.match_term(meta.index, meta.term):
                log.commit_to(meta.index)  # we already have it all: just move commit
            else:
                # Membership comes with the snapshot. We may be absent from it when it
                # predates our own addition: the entries after it add us again.
                log.restore(snap)
                self.voters = set(meta.voters)
                self.learners = set(meta.learners)
                self.conf_history = [(meta.index, meta.voters, meta.learners)]
                installed = True
        index = log.last_index() if installed else log.committed
        self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id, term=self.term, index=index))

    # -- membership ------------------------------------------------------------------------

    def _apply_conf_change(self, e: Entry) -> None:
        cc = decode_conf_change(e.data, f"entry[{e.index}].data")
        if not _change_membership(self.voters, self.learners, cc):
            return
        self.conf_history.append(
            (e.index, tuple(sorted(self.voters)), tuple(sorted(self.learners)))
        )
        if self.role is not Role.LEADER:
            return
        members = self.voters | self.learners
        for gone in [n for n in self.progress if n not in members]:
            del self.progress[gone]
        for n in sorted(members):
            if n not in self.progress:
                self.progress[n] = self._new_progress(n, self.log.last_index() + 1)
            self.progress[n].is_learner = n in self.learners
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
            self.lead_transferee = NONE
        if self.id not in self.voters:
            # Removed (or demoted): stop leading; the remaining voters elect a successor.
            self._become_follower(self.term, NONE)
            return
        if self._maybe_commit():
            self._bcast_append()
        self.append_wanted = True


def _change_membership(voters: set[int], learners: set[int], cc: ConfChange) -> bool:
    """Apply one single-step change in place; False if refused (it would leave no voter)."""
    node = cc.node_id
    if cc.type is ConfChangeType.ADD_VOTER:
        learners.discard(node)
        voters.add(node)
    elif cc.type is ConfChangeType.ADD_LEARNER:
        if voters == {node}:
            return False
        voters.discard(node)
        learners.add(node)
    else:
        if voters == {node}:
            return False
        voters.discard(node)
        learners.discard(node)
    return True
