"""A tiny hand-driven cluster for scenario tests: deliver everything, or filter messages.

Unlike `simnet`, nothing here is random except the cores' election timeouts: tests
decide who campaigns, which messages are dropped and when time passes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from flotilla.daemons.raft.core import Config, RaftNode
from flotilla.daemons.raft.messages import (
    Entry,
    EntryType,
    HardState,
    Message,
    PersistedState,
    ReadState,
    Ready,
    Snapshot,
)

Filter = Callable[[Message], bool]  # True: deliver


class Disk:
    def __init__(self) -> None:
        self.hard = HardState()
        self.snapshot = Snapshot()
        self.entries: list[Entry] = []

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            base = self.snapshot.meta.index
            del self.entries[max(rd.entries[0].index - base - 1, 0) :]
            self.entries.extend(e for e in rd.entries if e.index > base)
        if rd.hard_state is not None:
            self.hard = rd.hard_state

    def state(self) -> PersistedState:
        return PersistedState(self.hard, tuple(self.entries), self.snapshot)


class Cluster:
    def __init__(
        self,
        size: int,
        *,
        learners: tuple[int, ...] = (),
        seed: int = 1,
        **config: object,
    ) -> None:
        self.config = Config(**config)  # type: ignore[arg-type]
        self.voters = tuple(range(1, size + 1))
        self.learners_at_start = learners
        self.seed = seed
        self.disks: dict[int, Disk] = {}
        self.nodes: dict[int, RaftNode] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.reads: dict[int, list[ReadState]] = {}
        self.sent: list[Message] = []  # every message ever handed out, in order
        self.queue: list[Message] = []
        self.down: set[int] = set()
        for node_id in (*self.voters, *learners):
            self.add_node(node_id, bootstrap=True)

    @classmethod
    def from_disks(cls, states: dict[int, PersistedState], **config: object) -> Cluster:
        """A cluster whose nodes restart from the given persisted states."""
        c = cls(0, **config)
        c.voters = tuple(sorted(states))
        for node_id, st in sorted(states.items()):
            disk = Disk()
            disk.hard, disk.entries, disk.snapshot = st.hard_state, list(st.entries), st.snapshot
            c.disks[node_id] = disk
            c.add_node(node_id)
        return c

    def add_node(self, node_id: int, *, bootstrap: bool = False) -> RaftNode:
        self.disks.setdefault(node_id, Disk())
        self.applied.setdefault(node_id, [])
        self.reads.setdefault(node_id, [])
        node = RaftNode(
            node_id,
            peers=self.voters if bootstrap else (),
            learners=self.learners_at_start if bootstrap else (),
            persisted=self.disks[node_id].state(),
            config=self.config,
            rng=random.Random(self.seed * 1000 + node_id),
        )
        self.nodes[node_id] = node
        self.down.discard(node_id)
        self.process(node_id)
        return node

    def crash(self, node_id: int) -> None:
        self.down.add(node_id)
        self.queue = [m for m in self.queue if m.to != node_id]

    def restart(self, node_id: int) -> RaftNode:
        self.applied[node_id] = []
        return self.add_node(node_id, bootstrap=node_id in self.voters)

    def process(self, node_id: int) -> None:
        node = self.nodes[node_id]
        while node_id not in self.down and node.has_ready():
            rd = node.ready()
            self.disks[node_id].save(rd)
            self.sent.extend(rd.messages)
            self.queue.extend(rd.messages)
            self.applied[node_id].extend(
                e for e in rd.committed_entries if e.type is EntryType.NORMAL and e.data
            )
            self.reads[node_id].extend(rd.read_states)
            node.advance(rd)

    def process_all(self) -> None:
        for node_id in sorted(self.nodes):
            self.process(node_id)

    def deliver(self, keep: Filter | None = None, max_rounds: int = 1000) -> int:
        """Deliver queued messages (and what they cause) until quiet; returns the count."""
        count = 0
        for _ in range(max_rounds):
            self.process_all()
            if not self.queue:
                return count
            batch, self.queue = self.queue, []
            for m in batch:
                if m.to in self.down or m.to not in self.nodes:
                    continue
                if keep is not None and not keep(m):
                    continue
                self.nodes[m.to].step(m)
                count += 1
        raise AssertionError("network did not go quiet")

    def tick(self, node_id: int, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[node_id].tick()
        self.process(node_id)

    def tick_all(self, times: int = 1, keep: Filter | None = None) -> None:
        for _ in range(times):
            for node_id in sorted(self.nodes):
                if node_id not in self.down:
                    self.nodes[node_id].tick()
            self.deliver(keep)

    def elect(self, node_id: int) -> RaftNode:
        self.nodes[node_id].campaign()
        self.deliver()
        return self.nodes[node_id]

    def leader_ids(self) -> list[int]:
        return [i for i, n in sorted(self.nodes.items()) if n.role.value == "leader"]

    def data_applied(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id]]


def isolate(*ids: int) -> Filter:
    """Drop every message to or from the given nodes."""
    cut = set(ids)
    return lambda m: m.from_ not in cut and m.to not in cut


def drop_types(*types: object, to: int | None = None) -> Filter:
    return lambda m: not (m.type in types and (to is None or m.to == to))
