"""A deterministic simulated network and storage driving several Raft cores from one seed.

Every random choice (schedule, faults, election timeouts) comes from `random.Random`
objects derived from the seed, and nothing iterates over hash-ordered containers of
strings or bytes, so one seed always produces the same trace (its hash is
``Sim.trace_hash``).

The model:

* Time advances in ticks; every live node is ticked once per tick (sometimes skipped, to
  model clock drift). Messages get a random delay, may be lost, duplicated, or delivered
  in any order among those due; partitions block chosen directions (so asymmetric ones
  exist).
* Storage holds only what a node's Ready handed over and the simulator "persisted". A
  node's Ready is sometimes left unprocessed for a while; a crash loses it, and a crash
  can also strike after persisting but before sending. Messages of a Ready leave only
  after its persistence (the rule in `messages.Ready`), except that a leader sends the
  appends and heartbeats `messages.early_messages` allows as soon as it takes a Ready it
  holds, as the shell does while its fsync runs; a crash may then lose the leader's copy
  of entries its followers already have.
* Safety is checked as the run goes (one leader per term, log matching, leader
  completeness, state machine safety, ReadIndex freshness, no payload applied at two
  indexes); after the chaos phase the network heals, crashed nodes restart and every
  acknowledged (applied somewhere) proposal must reach every member.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field

from flotilla.daemons.raft.codec import decode_conf_change
from flotilla.daemons.raft.core import BOOTSTRAP_INDEX, Config, RaftNode
from flotilla.daemons.raft.messages import (
    EARLY_TYPES,
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
    Ready,
    Role,
    Snapshot,
    early_messages,
)

#: The properties the simulation checks, as `SimFailure.prop` names them.
ELECTION_SAFETY = "election safety"  # at most one leader per term
LOG_MATCHING = "log matching"  # same (index, term) means the same entry and history
LEADER_COMPLETENESS = "leader completeness"  # a leader holds every committed entry
STATE_MACHINE_SAFETY = "state machine safety"  # one entry, one state, per index
APPLY_ORDER = "apply order"  # entries applied one by one, in index order
EXACTLY_ONCE = "exactly once"  # a payload is applied at one index only
READ_FRESHNESS = "read freshness"  # a ReadIndex is no older than the commit at request
DURABLE_TERM = "durable term"  # a persisted term never goes backwards
LIVENESS = "liveness after heal"  # once healed, every member applies everything
#: every message a node emits names that node as its sender: the transport checks it
#: against the connection's hello and drops the whole connection (and all queued behind)
SENDER_IDENTITY = "sender identity"
PROPERTIES = (ELECTION_SAFETY, LOG_MATCHING, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY,
              APPLY_ORDER, EXACTLY_ONCE, READ_FRESHNESS, DURABLE_TERM, LIVENESS,
              SENDER_IDENTITY)


class SimFailure(AssertionError):
    """A safety or liveness property failed; the message says how to replay the seed.

    ``prop`` names the property (one of `PROPERTIES`), so a test that breaks the core on
    purpose can insist on the property it broke rather than on any failure at all.
    """

    def __init__(self, prop: str, message: str) -> None:
        super().__init__(message)
        self.prop = prop


@dataclass
class Storage:
    hard: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)

    def term_at(self, index: int) -> int | None:
        base = self.snapshot.meta.index
        if index == base:
            return self.snapshot.meta.term
        k = index - base - 1
        if 0 <= k < len(self.entries):
            return self.entries[k].term
        return None


@dataclass
class SimNode:
    id: int
    storage: Storage
    core: RaftNode | None = None
    up: bool = False
    applied: int = 0  # application state: last applied index ...
    app_hash: int = 0  # ... and the running checksum of everything applied
    restarts: int = 0
    #: context -> global commit index when the read was requested
    reads: dict[bytes, int] = field(default_factory=dict)
    held: Ready | None = None  # taken from the core, not yet persisted (async shell)
    held_sent_early: bool = False  # the held Ready's early messages already left


@dataclass(frozen=True)
class Scenario:
    """Fault mix and sizes, derived from the seed."""

    nodes: int
    chaos_ticks: int
    heal_ticks: int
    loss: float
    dup: float
    max_delay: int
    p_late: float
    p_partition: float
    p_crash: float
    p_restart: float
    p_propose: float
    p_conf: float
    p_transfer: float
    p_compact: float
    p_read: float
    p_defer_ready: float
    p_hold: float
    pre_vote: bool
    check_quorum: bool
    max_inflight: int
    max_size: int
    #: share of client proposals sent to a random member rather than the leader (a
    #: follower forwards them, as the shell does)
    p_follower: float = 0.1


#: Seeds from here on simulate a single-node cluster; below it, even seeds 3 nodes, odd 5.
ONE_NODE_SEED_BASE = 1_000_000_000


def nodes_for(seed: int) -> int:
    if seed >= ONE_NODE_SEED_BASE:
        return 1
    return 3 if seed % 2 == 0 else 5


def scenario_for(seed: int, nodes: int | None = None) -> Scenario:
    r = random.Random(seed ^ 0x5EED)
    n = nodes if nodes is not None else nodes_for(seed)
    return Scenario(
        nodes=n,
        chaos_ticks=r.randint(60, 120),
        heal_ticks=250,
        loss=r.choice([0.0, 0.02, 0.1]),
        dup=r.choice([0.0, 0.02, 0.05]),
        max_delay=r.choice([0, 1, 3]),
        p_late=r.choice([0.0, 0.01]),
        p_partition=r.choice([0.0, 0.03, 0.08, 0.2]),
        p_crash=r.choice([0.0, 0.02, 0.05, 0.15]),
        p_restart=r.choice([0.1, 0.5]),
        p_propose=r.choice([0.3, 0.6]),
        p_conf=r.choice([0.0, 0.03]),
        p_transfer=r.choice([0.0, 0.02]),
        p_compact=r.choice([0.0, 0.05]),
        p_read=r.choice([0.0, 0.1]),
        p_defer_ready=r.choice([0.0, 0.2]),
        p_hold=r.choice([0.0, 0.3]),
        pre_vote=r.random() < 0.7,
        check_quorum=r.random() < 0.7,
        max_inflight=r.choice([1, 4, 64]),
        max_size=r.choice([0, 64, 4096]),
    )


# Event codes for the trace hash.
EV_START, EV_CRASH, EV_READY, EV_PARTITION, EV_TRANSFER = 1, 2, 3, 4, 5
EV_COMPACT, EV_CONF, EV_DELIVER, EV_CONVERGED = 6, 7, 8, 9

ELECTION_TICK = 6
HEARTBEAT_TICK = 2


class Sim:
    def __init__(self, seed: int, nodes: int | None = None, scenario: Scenario | None = None):
        self.seed = seed
        self.sc = scenario or scenario_for(seed, nodes)
        self.rng = random.Random(seed)
        self.trace = 0  # folded hash of every event (ints only: int hashing is not salted)
        self.now = 0
        self.seq = 0
        n = self.sc.nodes
        self.initial = tuple(range(1, n + 1))
        self.spares = [n + 1, n + 2]
        self.nodes: dict[int, SimNode] = {}
        self.net: dict[int, list[Message]] = {}  # delivery tick -> messages due then
        self.blocked: set[tuple[int, int]] = set()
        # global knowledge for the checks
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.seen_leader: set[tuple[int, int]] = set()
        self.log_index: dict[tuple[int, int], tuple[int | None, int, bytes]] = {}
        self.applied: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.chain: dict[int, int] = {0: 0}  # index -> app checksum after applying it
        self.payload_at: dict[bytes, int] = {}
        self.proposed = 0
        self.conf_changes = 0
        self.commit_seen = 0  # highest commit index any node reported
        self.early_sent = 0  # leader messages sent before their Ready was persisted
        #: how often each check actually compared something, and each fault struck: a
        #: property is only proven by the schedules that exercised it
        self.exercised: Counter[str] = Counter()
        for node_id in self.initial:
            self.nodes[node_id] = SimNode(node_id, Storage())
            self._start(node_id)

    # -- plumbing ------------------------------------------------------------------------

    def fail(self, prop: str, what: str) -> None:
        raise SimFailure(
            prop,
            f"seed {self.seed} tick {self.now}: {prop}: {what}; "
            f"replay with RAFT_SIM_SEED={self.seed}",
        )

    def _config(self) -> Config:
        sc = self.sc
        return Config(
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            max_inflight_msgs=sc.max_inflight,
            max_size_per_msg=sc.max_size,
            check_quorum=sc.check_quorum,
            pre_vote=sc.pre_vote,
        )

    def _start(self, node_id: int) -> None:
        node = self.nodes[node_id]
        # Like a real shell, a restart passes the same initial membership again; the core
        # uses it only when storage is empty (a crash before the first write).
        peers = self.initial if node_id in self.initial else ()
        st = node.storage
        persisted = PersistedState(st.hard, tuple(st.entries), st.snapshot)
        rng = random.Random(self.seed * 7919 + node_id * 104729 + node.restarts)
        node.core = RaftNode(
            node_id,
            peers=peers,
            persisted=persisted,
            config=self._config(),
            rng=rng,
        )
        node.up = True
        node.applied = st.snapshot.meta.index
        node.app_hash = _snap_hash(st.snapshot)
        node.reads = {}
        node.held = None
        self._note(EV_START, node_id)

    def _note(self, *event: int | None) -> None:
        self.trace = hash((self.trace, self.now, *event))

    def crash(self, node_id: int, *, mid_ready: bool = False) -> None:
        node = self.nodes[node_id]
        if mid_ready and node.held is not None:
            self._persist(node, node.held)  # durable, but neither sent nor applied
        elif mid_ready and node.core is not None and node.core.has_ready():
            self._persist(node, node.core.ready())
        node.held = None
        node.held_sent_early = False
        node.core = None
        node.up = False
        node.restarts += 1
        self.exercised["crash"] += 1
        self._note(EV_CRASH, node_id, mid_ready)

    def _send_from(self, node: SimNode, m: Message) -> None:
        """Send what ``node`` emitted, as the peer transport would carry it."""
        if m.from_ != node.id:
            self.fail(SENDER_IDENTITY, f"node {node.id} sent {m.type.name} to {m.to} "
                      f"naming {m.from_} as its sender (the receiver drops the connection)")
        if m.type is MessageType.PROP:
            self.exercised["proposal passed on"] += 1  # a follower re-forwarding one
        self._send(m)

    def _send(self, m: Message) -> None:
        sc = self.sc
        r = self.rng
        if (m.from_, m.to) in self.blocked or r.random() < sc.loss:
            return
        copies = 2 if r.random() < sc.dup else 1
        if m.type is MessageType.PROP:
            # A stream never delivers a message twice, and nothing resends a proposal:
            # a second copy would be a second proposal, not a network fault.
            copies = 1
        for _ in range(copies):
            self.seq += 1
            delay = int(r.random() * (sc.max_delay + 1))
            if sc.p_late and r.random() < sc.p_late:
                delay += r.randint(5, 30)  # a stale message from the past
            due = self.now + delay
            bucket = self.net.get(due)
            if bucket is None:
                self.net[due] = [m]
            else:
                bucket.append(m)

    # -- Ready handling and the checks ---------------------------------------------------

    def _persist(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        if rd.snapshot is not None:
            st.snapshot = rd.snapshot
            st.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = st.snapshot.meta.index
            del st.entries[max(first - base - 1, 0) :]
            for e in rd.entries:
                if e.index <= base:
                    continue
                prev = st.term_at(e.index - 1)
                key = (e.index, e.term)
                value = (prev, int(e.type), e.data)
                known = self.log_index.setdefault(key, value)
                if known is not value:
                    self.exercised["log matching"] += 1  # a second copy compared
                if known != value and known[0] is not None and prev is not None:
                    self.fail(LOG_MATCHING, f"node {node.id} entry {key} differs {known} {value}")
                if known[1:] != value[1:]:
                    self.fail(LOG_MATCHING, f"node {node.id} entry {key} data differs")
                st.entries.append(e)
        if rd.hard_state is not None:
            if rd.hard_state.term < st.hard.term:
                self.fail(DURABLE_TERM, f"node {node.id} term went backwards")
            st.hard = rd.hard_state

    def process_ready(self, node: SimNode, hold: bool = False) -> None:
        """Take the node's Ready and handle it, or (``hold``) only take it for now.

        A held Ready models a shell whose disk write is still running while messages
        and ticks keep arriving: the core sees steps between ``ready`` and ``advance``.
        """
        core = node.core
        if core is None:
            return
        sent_early = False
        if node.held is not None:
            rd, node.held = node.held, None
            sent_early, node.held_sent_early = node.held_sent_early, False
        elif not core.has_ready():
            return
        else:
            rd = core.ready()
            if hold:
                node.held = rd
                st = node.storage
                early = early_messages(rd, core.role is Role.LEADER, (st.hard.term, st.hard.vote))
                for m in early:
                    self._send_from(node, m)
                node.held_sent_early = bool(early)
                self.early_sent += len(early)
                return
        self._persist(node, rd)
        for m in rd.messages:
            if sent_early and m.type in EARLY_TYPES:
                continue
            self._send_from(node, m)
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            h = _snap_hash(rd.snapshot)
            if meta.index in self.chain and self.chain[meta.index] != h:
                self.fail(STATE_MACHINE_SAFETY,
                          f"node {node.id} installed a snapshot at {meta.index} with other state")
            if meta.index > BOOTSTRAP_INDEX:
                self.exercised["snapshot installed"] += 1
            if meta.index > node.applied:
                node.applied = meta.index
                node.app_hash = h
        for e in rd.committed_entries:
            self._apply(node, e)
        for rs in rd.read_states:
            floor = node.reads.pop(rs.context, None)
            if floor is not None:
                self.exercised["read freshness"] += 1
                if rs.index < floor:
                    self.fail(READ_FRESHNESS,
                              f"node {node.id} read index {rs.index} below commit {floor}")
        if rd.hard_state is not None and rd.hard_state.commit > self.commit_seen:
            self.commit_seen = rd.hard_state.commit
        core.advance(rd)
        if core.role is Role.LEADER:
            self._check_leader(node)
        self._note(EV_READY, node.id, len(rd.entries), len(rd.messages), core.log.committed)

    def _apply(self, node: SimNode, e: Entry) -> None:
        if e.index <= node.applied:
            return
        if e.index != node.applied + 1:
            self.fail(APPLY_ORDER, f"node {node.id} applied {e.index} after {node.applied}")
        value = (e.term, int(e.type), e.data)
        known = self.applied.setdefault(e.index, value)
        if known is not value:
            self.exercised["state machine safety"] += 1  # applied again elsewhere: compared
        if known != value:
            self.fail(STATE_MACHINE_SAFETY, f"index {e.index} {known} vs {value} on {node.id}")
        node.app_hash = zlib.crc32(e.data, node.app_hash ^ e.index) if e.data else node.app_hash
        known_hash = self.chain.setdefault(e.index, node.app_hash)
        if known_hash != node.app_hash:
            self.fail(STATE_MACHINE_SAFETY, f"node {node.id} state diverged at {e.index}")
        node.applied = e.index
        if e.type is EntryType.CONF_CHANGE and known is value:
            self.exercised["membership change"] += 1
        if e.type is EntryType.NORMAL and e.data:
            at = self.payload_at.setdefault(e.data, e.index)
            if at != e.index:
                self.fail(EXACTLY_ONCE, f"payload {e.data!r} applied at {at} and {e.index}")

    def _check_leader(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        key = (core.term, node.id)
        if key in self.seen_leader:
            return
        self.seen_leader.add(key)
        self.exercised["election safety"] += 1
        if len(self.leaders) > 0 and core.term not in self.leaders:
            self.exercised["leader change"] += 1
        other = self.leaders.setdefault(core.term, node.id)
        if other != node.id:
            self.fail(ELECTION_SAFETY, f"two leaders in term {core.term}: {other} and {node.id}")
        log = core.log
        if any(index > log.offset for index in self.applied):
            self.exercised["leader completeness"] += 1
        for index, (term, _t, _d) in self.applied.items():
            if index > log.offset and log.term(index) != term:
                self.fail(LEADER_COMPLETENESS, f"leader {node.id} lacks committed entry {index}")

    # -- the schedule --------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        best = None
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            core = node.core
            if (
                node.up
                and core is not None
                and core.role is Role.LEADER
                and (
                    best is None or core.term > best.core.term  # type: ignore[union-attr]
                )
            ):
                best = node
        return best

    def _faults(self) -> None:
        sc = self.sc
        r = self.rng
        ids = sorted(self.nodes)
        if r.random() < sc.p_partition:
            kind = r.randrange(4)
            self.blocked = set()
            if kind == 0:  # heal
                pass
            elif kind == 1:  # split in two groups
                side = {i for i in ids if r.random() < 0.5}
                self.blocked = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            elif kind == 2:  # isolate one node
                victim = r.choice(ids)
                self.blocked = {(a, b) for a in ids for b in ids if victim in (a, b) and a != b}
            else:  # asymmetric: some directions only
                self.blocked = {(a, b) for a in ids for b in ids if a != b and r.random() < 0.3}
            if self.blocked:
                self.exercised["partition"] += 1
            self._note(EV_PARTITION, kind, len(self.blocked))
        if r.random() < sc.p_crash:
            victim = r.choice(ids)
            node = self.nodes[victim]
            if node.up:
                self.crash(victim, mid_ready=r.random() < 0.5)
            else:
                self._start(victim)
        for node_id in ids:  # crashed nodes come back after a while
            node = self.nodes[node_id]
            if not node.up and r.random() < sc.p_restart:
                self._start(node_id)

    def _client(self, chaos: bool) -> None:
        sc = self.sc
        r = self.rng
        lead = self.leader()
        if r.random() < sc.p_propose:
            target = (lead if lead is not None and r.random() < 1 - sc.p_follower
                      else self._random_up())
            if target is not None:
                batch = [self._payload() for _ in range(r.choice((1, 1, 2, 5)))]
                try:
                    target.core.propose_many(batch)  # type: ignore[union-attr]
                except NotLeader as exc:
                    self._forward(target, exc.leader, batch)
                except ProposalDropped:
                    pass
        if lead is None or lead.core is None:
            return
        if chaos and r.random() < sc.p_conf and self.conf_changes < 4:
            self._conf_change(lead)
        if chaos and r.random() < sc.p_transfer:
            voters = sorted(lead.core.voters)
            lead.core.transfer_leadership(r.choice(voters))
            self._note(EV_TRANSFER)
        if r.random() < sc.p_read:
            node = self._random_up()
            if node is not None and node.core is not None:
                ctx = b"r%d" % self.seq
                self.seq += 1
                try:
                    node.core.read_index(ctx)
                    node.reads[ctx] = self.commit_seen
                except NotLeader:
                    pass
        if r.random() < sc.p_compact:
            node = self._random_up()
            if node is not None and node.core is not None:
                core = node.core
                if core.log.applied - core.log.offset >= 3 and node.applied == core.log.applied:
                    snap = core.compact(core.log.applied, _encode_state(node))
                    st = node.storage
                    drop = snap.meta.index - st.snapshot.meta.index
                    if drop > 0 and st.term_at(snap.meta.index) == snap.meta.term:
                        st.snapshot = snap
                        del st.entries[:drop]
                    self._note(EV_COMPACT, node.id, snap.meta.index)

    def _forward(self, node: SimNode, leader: int, batch: list[bytes]) -> None:
        """What the shell does with proposals a follower takes: one PROP to its leader."""
        if leader in (NONE, node.id):
            return
        entries = tuple(Entry(0, k + 1, data=p) for k, p in enumerate(batch))
        self.exercised["proposal forwarded"] += 1
        self._send(Message(MessageType.PROP, to=leader, from_=node.id, entries=entries))

    def _conf_change(self, lead: SimNode) -> None:
        r = self.rng
        core = lead.core
        assert core is not None
        voters = sorted(core.voters)
        learners = sorted(core.learners)
        choice = r.randrange(3)
        if choice == 0 and self.spares:
            cc = ConfChange(ConfChangeType.ADD_LEARNER, self.spares[0])
        elif choice == 1 and learners:
            cc = ConfChange(ConfChangeType.ADD_VOTER, r.choice(learners))
        elif choice == 2 and len(voters) > 2:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, r.choice(voters))
        else:
            return
        try:
            core.propose_conf_change(cc)
        except (NotLeader, ProposalDropped):
            return
        self.conf_changes += 1
        if cc.type is ConfChangeType.ADD_LEARNER:
            new_id = self.spares.pop(0)
            self.nodes[new_id] = SimNode(new_id, Storage())
            self._start(new_id)
        self._note(EV_CONF, int(cc.type), cc.node_id)

    def _random_up(self) -> SimNode | None:
        up = [self.nodes[i] for i in sorted(self.nodes) if self.nodes[i].up]
        return self.rng.choice(up) if up else None

    def _payload(self) -> bytes:
        self.proposed += 1
        return b"p%d" % self.proposed

    def _deliver_due(self, lossless: bool) -> None:
        # Messages sent with no delay in the last round of the previous tick are still due.
        due = self.net.pop(self.now - 1, []) + self.net.pop(self.now, [])
        if not due:
            return
        self.rng.shuffle(due)
        for m in due:
            node = self.nodes.get(m.to)
            if node is None or not node.up or node.core is None:
                continue
            if not lossless and (m.from_, m.to) in self.blocked:
                continue
            node.core.step(m)
            self._note(EV_DELIVER, int(m.type), m.from_, m.to, m.term, m.index, len(m.entries))

    def step_tick(self, chaos: bool) -> None:
        r = self.rng
        self.now += 1
        if chaos:
            self._faults()
        self._client(chaos)
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            if node.up and node.core is not None and (not chaos or r.random() < 0.95):
                node.core.tick()
        for _ in range(2):
            self._deliver_due(lossless=not chaos)
            for node_id in sorted(self.nodes):
                node = self.nodes[node_id]
                if chaos and r.random() < self.sc.p_defer_ready:
                    continue
                self.process_ready(node, hold=chaos and r.random() < self.sc.p_hold)

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> str:
        for _ in range(self.sc.chaos_ticks):
            self.step_tick(chaos=True)
        # Heal: everyone up, no partitions, no loss; clients keep proposing a little.
        self.blocked = set()
        for node_id in sorted(self.nodes):
            if not self.nodes[node_id].up:
                self._start(node_id)
        saved = self.sc
        self.sc = _calm(self.sc)
        converged_at = None
        for _ in range(self.sc.heal_ticks):
            self.step_tick(chaos=False)
            if self._converged():
                converged_at = self.now
                break
        self.sc = saved
        if converged_at is None:
            self.fail(LIVENESS, self._divergence_report())
        self.exercised["liveness after heal"] += 1
        self._note(EV_CONVERGED, converged_at)
        return hashlib.blake2b(str(self.trace).encode(), digest_size=16).hexdigest()

    def _members(self) -> tuple[list[SimNode], SimNode | None]:
        lead = self.leader()
        if lead is None or lead.core is None:
            return [], None
        members = sorted(lead.core.voters | lead.core.learners)
        return [self.nodes[i] for i in members if i in self.nodes], lead

    def _converged(self) -> bool:
        members, lead = self._members()
        if lead is None or lead.core is None:
            return False
        core = lead.core
        if core.log.term(core.log.committed) != core.term:
            return False  # the leader has not committed in its term yet
        top = max(self.applied) if self.applied else 0
        if core.log.committed < top:
            return False
        target = core.log.committed
        return all(n.up and n.applied >= target for n in members)

    def _divergence_report(self) -> str:
        parts = []
        for node_id in sorted(self.nodes):
            n = self.nodes[node_id]
            c = n.core
            if c is None:
                parts.append(f"{node_id}:down")
            else:
                parts.append(
                    f"{node_id}:{c.role.value} t{c.term} lead{c.lead} commit{c.log.committed} "
                    f"applied{n.applied} last{c.log.last_index()} voters{sorted(c.voters)}"
                )
        return "no convergence: " + "; ".join(parts)


def _calm(sc: Scenario) -> Scenario:
    from dataclasses import replace

    return replace(
        sc,
        loss=0.0,
        dup=0.0,
        p_late=0.0,
        p_partition=0.0,
        p_crash=0.0,
        p_propose=0.1,
        p_conf=0.0,
        p_transfer=0.0,
        p_defer_ready=0.0,
        p_hold=0.0,
    )


def _encode_state(node: SimNode) -> bytes:
    return b"%d:%d" % (node.applied, node.app_hash)


def _snap_hash(snap: Snapshot) -> int:
    if snap.is_empty or not snap.data:
        return 0  # no snapshot, or the bootstrap snapshot: empty application state
    return int(snap.data.split(b":")[1])


def conf_changes_in(entries: list[Entry]) -> list[ConfChange]:
    return [decode_conf_change(e.data) for e in entries if e.type is EntryType.CONF_CHANGE]


def run_seed(seed: int) -> str:
    """Run one schedule (its shape is a function of the seed alone); returns the trace hash.

    Raises `SimFailure` naming the broken property and the seed to replay.
    """
    return Sim(seed).run()


def run_seed_exercised(seed: int) -> tuple[str, Counter[str]]:
    """`run_seed`, also returning what the schedule exercised (see `Sim.exercised`)."""
    sim = Sim(seed)
    return sim.run(), sim.exercised
