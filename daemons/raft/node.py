"""The asyncio shell around one Raft core: timers, disk, network, application.

`RaftShell` owns a `core.RaftNode`, a `storage.DiskStorage` and a `transport.PeerTransport`
and runs the Ready loop from `messages.Ready`: persist the whole Ready and fsync once
(in a worker thread, so the event loop keeps reading sockets and taking proposals that
will form the next Ready: group commit), then send its messages, apply its committed
entries, serve reads, and ``advance``. Only the loop task touches the core, so inputs
(ticks, peer messages, proposals, reads) are queued and stepped in between two Readies.

"Acknowledged" means applied: ``await shell.propose(data)`` returns only once the entry
is committed *and* applied here. Each proposal is wrapped with a request id that
survives forwarding, so the node that took the proposal recognises it when it applies
the entry, whichever leader appended it. A follower forwards proposals to the leader it
knows (a ``PROP`` message); a proposal lost with a leader fails with a timeout, never a
false acknowledgement.

Snapshots: every ``snapshot_every`` applied entries the application's ``snapshot()`` is
stored together with the peer address book, the core compacts its log and the storage
releases WAL segments the snapshot covers.

Run as a module, this file starts a demo member: an append-only list of values behind a
one-JSON-object-per-line TCP protocol. It is test and benchmark plumbing, not the store.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import gc
import json
import logging
import os
import random
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgpack

from . import codec, tls
from .core import Config, RaftNode, Status
from .messages import (
    EARLY_TYPES,
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    Ready,
    Role,
    Snapshot,
    early_messages,
)
from .storage import DiskStorage, StorageCorruptError
from .transport import PeerTransport
from .wal import WalCorruptError

log = logging.getLogger(__name__)

#: Proposal envelope: 16-byte request id, then the application's bytes.
RID_BYTES = 16
#: how long a leader's commit index may stand still behind its log before it says so
STALL_WARNING_SECONDS = 3.0
# A Ready's write taking longer than this is logged, as etcd warns of a slow fdatasync
# ("expected less than 1s"): on a starved disk it is what explains an election or a
# request timeout that the Raft log alone does not.
SLOW_SYNC_SECONDS = 1.0

Address = tuple[str, int]


class StateMachine(Protocol):
    """What the shell needs from the application.

    An application that keeps its own record of members (names, URLs) may also define
    ``apply_conf_change(index, type, node_id, app)``: the shell calls it when a membership
    change is applied, with the ``app`` bytes given to `RaftShell.add_member` or
    `RaftShell.remove_member`, so that record changes at the same log position as the
    Raft voter set and lands in the same snapshots.
    """

    def apply(self, index: int, data: bytes) -> Any: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


class ProposalTimeout(Exception):
    """Not applied in time; it may still be applied later (the outcome is unknown)."""


@dataclass(slots=True)
class ShellConfig:
    node_id: int
    data_dir: Path
    listen: Address
    peers: dict[int, Address]  # every known member's peer address (self included or not)
    cluster: str = "flotilla"
    join: bool = False  # True: an added member that learns the membership from the leader
    tick_seconds: float = 0.1
    election_tick: int = 10
    heartbeat_tick: int = 1
    snapshot_every: int = 10_000
    proposal_timeout: float = 5.0
    fsync: bool = True
    segment_bytes: int = 64 * 1024 * 1024
    max_batch: int = 4096  # proposals stepped into the core per loop turn
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    seed: int | None = None
    #: a member that is the only voter elects itself at once instead of after an
    #: election timeout (nobody else could vote, so waiting only delays serving)
    campaign_at_start: bool = False


@dataclass(slots=True)
class ShellStats:
    readies: int = 0
    applied_entries: int = 0
    proposals_forwarded: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    persist_seconds: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


class RaftShell:
    """One Raft member: `start`, then `propose` / `read_index` / membership calls."""

    def __init__(self, cfg: ShellConfig, sm: StateMachine) -> None:
        self.cfg = cfg
        self.sm = sm
        self.stats = ShellStats()
        self.addresses: dict[int, Address] = dict(cfg.peers)
        self._rng = random.Random(cfg.seed)
        self._nonce = os.urandom(8)
        self._counter = 0
        self._inputs: list[tuple[str, Any]] = []
        self._tick_pending = False  # a tick is queued in _inputs and not yet stepped
        #: proposals and reads that arrived while no leader was known (e.g. mid-election);
        #: retried once one is, until their caller's timeout gives up on them
        self._parked: list[tuple[str, Any]] = []
        self._wakeup = asyncio.Event()
        self._waiting: dict[bytes, asyncio.Future[Any]] = {}
        #: (deadline, rid) of every request, oldest first; see `_expire_requests`
        self._deadlines: collections.deque[tuple[float, bytes]] = collections.deque()
        self._reads: list[tuple[int, bytes]] = []  # (read index, rid) not yet served
        #: reads sent to a leader (rid -> that leader): re-asked if another one takes over,
        #: since a leader that died or was removed never answers
        self._remote_reads: dict[bytes, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-io")
        self._stopping = False
        self.applied = 0
        self.applied_term = 0
        self._last_snapshot = 0
        #: (term, vote) known to be on disk; see `_send_before_persist`
        self._durable_vote: tuple[int, int] = (0, NONE)
        #: (commit index, since, last warned) while a leader's log runs ahead of its commit
        self._stall: tuple[int, float, float] | None = None
        self.storage: DiskStorage | None = None
        self.core: RaftNode | None = None
        self.transport: PeerTransport | None = None
        self.removed = False
        #: called once when this member applies its own removal
        self.on_removed: Callable[[], None] | None = None
        self.failed: BaseException | None = None
        #: answers peer-port queries (see `transport`); none served when unset
        self.on_query: Callable[[str], Any] | None = None
        #: called if a background task dies; the demo runner exits the process
        self.on_failure: Callable[[BaseException], None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self.storage = await loop.run_in_executor(
            self._executor,
            lambda: DiskStorage.open(
                cfg.data_dir, segment_bytes=cfg.segment_bytes, fsync=cfg.fsync
            ),
        )
        persisted = self.storage.persisted
        self._durable_vote = (persisted.hard_state.term, persisted.hard_state.vote)
        if not persisted.snapshot.is_empty:
            self._restore(persisted.snapshot.data)
            self.applied = self._last_snapshot = persisted.snapshot.meta.index
            self.applied_term = persisted.snapshot.meta.term
        peers = () if cfg.join else tuple(sorted(set(cfg.peers) | {cfg.node_id}))
        self.core = RaftNode(
            cfg.node_id,
            peers=peers,
            persisted=persisted,
            config=Config(election_tick=cfg.election_tick, heartbeat_tick=cfg.heartbeat_tick),
            rng=self._rng,
        )
        if cfg.campaign_at_start and self.core.voters == {cfg.node_id}:
            self.core.campaign()
        # What was read at opening has been handed over; its snapshot bytes need not stay.
        self.storage.persisted = dataclasses.replace(
            persisted, snapshot=Snapshot(persisted.snapshot.meta))
        self._keep_snapshot_on_disk_only()
        self.transport = PeerTransport(
            node_id=cfg.node_id,
            cluster=cfg.cluster,
            listen=cfg.listen,
            on_message=self._on_message,
            on_query=self._on_query,
            server_ssl=cfg.server_ssl,
            client_ssl=cfg.client_ssl,
            rng=self._rng,
            proposal_ttl=cfg.proposal_timeout,
        )
        await self.transport.start()
        for pid, addr in self.addresses.items():
            self.transport.set_peer(pid, addr)
        self._tasks = [
            loop.create_task(self._run(), name="raft-ready-loop"),
            loop.create_task(self._ticker(), name="raft-ticker"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A dead Ready loop must not leave a member that looks alive but never acts."""
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        log.critical("node %d: %s stopped: %r", self.cfg.node_id, task.get_name(), exc,
                     exc_info=exc)
        self.failed = exc or RuntimeError(f"{task.get_name()} ended")
        if self.on_failure is not None:
            self.on_failure(self.failed)

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.transport is not None:
            await self.transport.close()
        if self.storage is not None:
            self.storage.close()
        self._executor.shutdown(wait=True)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ProposalTimeout("node stopped"))

    # -- client API ------------------------------------------------------------------

    def status(self) -> Status:
        assert self.core is not None
        return self.core.status()

    @property
    def leader(self) -> int:
        return self.core.lead if self.core is not None else NONE

    async def propose(self, data: bytes) -> Any:
        """Replicate ``data``; return the state machine's result once applied here."""
        rid, fut = self._new_request()
        self._push("propose", (rid, bytes(data)))
        return await self._wait(rid, fut)

    async def read_index(self) -> int:
        """Wait until a linearizable read may be served locally; return the read index."""
        rid, fut = self._new_request()
        self._push("read", rid)
        return await self._wait(rid, fut)

    async def add_member(self, node_id: int, address: Address, *, learner: bool = False,
                         app: bytes = b"", forward: bool = False) -> int:
        kind = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        return await self._conf_change(kind, node_id, address, app, forward)

    async def remove_member(self, node_id: int, *, app: bytes = b"",
                            forward: bool = False) -> int:
        return await self._conf_change(ConfChangeType.REMOVE_NODE, node_id, None, app, forward)

    async def _conf_change(self, kind: ConfChangeType, node_id: int, addr: Address | None,
                           app: bytes, forward: bool) -> int:
        """Propose a membership change on the leader.

        On a follower it fails with `NotLeader` (naming the leader), unless ``forward``:
        then the change goes to the leader this member knows, like a proposal, and the
        call returns once the change is applied here.
        """
        rid, fut = self._new_request()
        context = _pack({"rid": rid, "addr": list(addr) if addr else None, "app": bytes(app)})
        self._push("conf", (rid, ConfChange(kind, node_id, context), forward))
        return await self._wait(rid, fut)

    def _new_request(self) -> tuple[bytes, asyncio.Future[Any]]:
        self._counter += 1
        rid = self._nonce + self._counter.to_bytes(8, "big")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        return rid, fut

    async def _wait(self, rid: bytes, fut: asyncio.Future[Any]) -> Any:
        # Deadlines are swept by the ticker rather than given one timer each (as
        # asyncio.wait_for would): per-request timers cost more than a lone member's
        # whole Raft round. All requests share one timeout, so the queue stays in
        # deadline order.
        self._deadlines.append((time.monotonic() + self.cfg.proposal_timeout, rid))
        try:
            return await fut
        finally:
            self._waiting.pop(rid, None)
            self._remote_reads.pop(rid, None)

    def _push(self, kind: str, item: Any) -> None:
        self._inputs.append((kind, item))
        self._wakeup.set()

    def _on_query(self, query: str) -> Any:
        if self.on_query is None:
            raise KeyError(f"query {query!r}: not served here")
        return self.on_query(query)

    def _on_message(self, message: Message) -> None:
        self._push("msg", message)

    def _fail(self, rid: bytes, exc: Exception) -> None:
        fut = self._waiting.get(rid)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _resolve(self, rid: bytes, value: Any) -> None:
        fut = self._waiting.get(rid)
        if fut is not None and not fut.done():
            fut.set_result(value)

    # -- the loop --------------------------------------------------------------------

    async def _ticker(self) -> None:
        """One tick per period, but never a backlog of them.

        While a Ready's write is in flight, inputs wait; ticks queued behind a slow fsync
        would be stepped all at once afterwards and time out an election (or make a
        leader doubt its quorum) for a wait that was the disk's, not the peers'. A tick
        already waiting stands for the later ones, as a Go ticker drops ticks its reader
        was too slow for.
        """
        while True:
            await asyncio.sleep(self.cfg.tick_seconds)
            if not self._tick_pending:
                self._tick_pending = True
                self._push("tick", None)
            now = time.monotonic()
            self._expire_requests(now)
            self._warn_if_stalled(now)

    def _warn_if_stalled(self, now: float) -> None:
        """Log, every few seconds, a leader holding entries it cannot commit.

        The usual cause is a lost quorum, but a leader whose followers answer heartbeats
        and still commit nothing is a replication bug; the line shows each follower's
        progress (state, match, next) so that either can be told apart from the journal.
        """
        core = self.core
        if core is None or core.role is not Role.LEADER:
            self._stall = None
            return
        commit, last = core.log.committed, core.log.last_index()
        if commit >= last:
            self._stall = None
            return
        if self._stall is None or self._stall[0] != commit:
            self._stall = (commit, now, now)
            return
        _, since, warned = self._stall
        if now - warned >= STALL_WARNING_SECONDS:
            self._stall = (commit, since, now)
            status = core.status()
            log.warning("node %d: leader at term %d has not committed past %d for %.1fs "
                        "(last index %d); progress %s", self.cfg.node_id, core.term, commit,
                        now - since, last, status.progress)

    def _expire_requests(self, now: float) -> None:
        """Fail requests past their deadline (the outcome of a proposal stays unknown)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, rid = deadlines.popleft()
            if rid in self._waiting:
                self._fail(rid, ProposalTimeout(
                    f"not applied within {self.cfg.proposal_timeout}s"))

    async def _run(self) -> None:
        core = self.core
        assert core is not None
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            inputs, self._inputs = self._inputs, []
            if self._parked and core.lead != NONE:
                inputs, self._parked = self._parked + inputs, []
            self._step_inputs(inputs)
            while core.has_ready():
                await self._handle_ready(core.ready())

    def _step_inputs(self, inputs: list[tuple[str, Any]]) -> None:
        core = self.core
        assert core is not None
        proposals: list[tuple[bytes, bytes]] = []
        for kind, item in inputs:
            if kind == "msg":
                core.step(item)
            elif kind == "tick":
                self._tick_pending = False
                core.tick()
            elif kind == "propose":
                proposals.append(item)
            elif kind == "read":
                if item not in self._waiting:
                    continue  # its caller already gave up
                try:
                    core.read_index(item)
                    if core.role is not Role.LEADER:
                        self._remote_reads[item] = core.lead
                except NotLeader:
                    self._parked.append((kind, item))
            elif kind == "conf":
                rid, cc, forward = item
                if rid not in self._waiting:
                    continue  # its caller already gave up
                try:
                    core.propose_conf_change(cc)
                except NotLeader as exc:
                    if forward:
                        self._forward_conf_change(exc.leader, item)
                    else:
                        self._fail(rid, exc)
                except (ProposalDropped, ValueError) as exc:
                    self._fail(rid, exc)
        for start in range(0, len(proposals), self.cfg.max_batch):
            self._propose_batch(proposals[start : start + self.cfg.max_batch])

    def _forward_conf_change(self, leader: int, item: tuple[bytes, ConfChange, bool]) -> None:
        if leader == NONE or leader == self.cfg.node_id or self.transport is None:
            self._parked.append(("conf", item))
            return
        entry = Entry(term=0, index=1, type=EntryType.CONF_CHANGE,
                      data=codec.encode_conf_change(item[1]))
        self.transport.send(
            Message(MessageType.PROP, to=leader, from_=self.cfg.node_id, entries=(entry,))
        )
        self.stats.proposals_forwarded += 1

    def _propose_batch(self, batch: list[tuple[bytes, bytes]]) -> None:
        core = self.core
        assert core is not None
        payloads = [rid + data for rid, data in batch]
        try:
            core.propose_many(payloads)
            return
        except ProposalDropped as exc:
            for rid, _ in batch:
                self._fail(rid, exc)
            return
        except NotLeader as exc:
            leader = exc.leader
        if leader == NONE or leader == self.cfg.node_id or self.transport is None:
            self._parked.extend(("propose", item) for item in batch if item[0] in self._waiting)
            return
        entries = tuple(
            Entry(term=0, index=k + 1, data=p) for k, p in enumerate(payloads)
        )
        self.transport.send(
            Message(MessageType.PROP, to=leader, from_=self.cfg.node_id, entries=entries)
        )
        self.stats.proposals_forwarded += len(batch)

    async def _handle_ready(self, rd: Ready) -> None:
        core, storage, transport = self.core, self.storage, self.transport
        assert core is not None and storage is not None and transport is not None
        self.stats.readies += 1
        early = self._send_before_persist(rd)
        if rd.must_sync or rd.snapshot is not None:
            started = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(
                self._executor, storage.save_ready, rd
            )
            if rd.hard_state is not None:
                self._durable_vote = (rd.hard_state.term, rd.hard_state.vote)
            took = time.perf_counter() - started
            self.stats.persist_seconds += took
            if took >= SLOW_SYNC_SECONDS:
                log.warning("node %d: writing %d entries took %.2fs, expected less than "
                            "%gs (a slow or overloaded disk delays heartbeats and commits)",
                            self.cfg.node_id, len(rd.entries), took, SLOW_SYNC_SECONDS)
        elif rd.hard_state is not None or rd.entries:
            # Only the commit index moved: a small unsynced write, cheaper done here
            # than handed to the I/O thread and back.
            storage.save_ready(rd)
        for m in rd.messages:
            if early and m.type in EARLY_TYPES:
                continue  # already sent
            if m.type is MessageType.SNAP:
                full = self._with_snapshot_data(m)
                if full is None:
                    core.report_snapshot(m.to, False)
                    continue
                transport.send(full)
                core.report_snapshot(m.to, True)
                continue
            transport.send(m)
        if rd.snapshot is not None and rd.snapshot.meta.index > self.applied:
            self._restore(rd.snapshot.data)
            self.applied = self._last_snapshot = rd.snapshot.meta.index
            self.applied_term = rd.snapshot.meta.term
            self.stats.snapshots_installed += 1
            self._keep_snapshot_on_disk_only()
        for entry in rd.committed_entries:
            if entry.index <= self.applied:
                continue
            self._apply(entry)
        for rs in rd.read_states:
            self._reads.append((rs.index, rs.context))
        self._serve_reads()
        core.advance(rd)
        if rd.soft_state is not None:
            self._reask_reads(rd.soft_state.leader)
        if rd.soft_state is not None:
            self._log_role(rd.soft_state.role, rd.soft_state.leader)
        if self.applied - self._last_snapshot >= self.cfg.snapshot_every:
            await self._take_snapshot()

    def _log_role(self, role: Role, leader: int) -> None:
        """One line per change of role or leader, as etcd logs elections: what an
        operator (or a failed fault test) reads to see when the cluster had no leader."""
        core = self.core
        assert core is not None
        if role is Role.LEADER:
            log.info("node %d is leader at term %d", self.cfg.node_id, core.term)
        elif leader == NONE:
            log.info("node %d is %s at term %d and knows no leader", self.cfg.node_id,
                     role.value, core.term)
        else:
            log.info("node %d is %s of leader %d at term %d", self.cfg.node_id,
                     role.value, leader, core.term)

    def _send_before_persist(self, rd: Ready) -> bool:
        """As leader, send appends and heartbeats while this Ready's own write is in flight.

        Sending them only after the leader's fsync would put the leader's and the
        followers' fsyncs one after the other on every write (Raft thesis 10.2.1). The
        safety argument is at `messages.early_messages`; this shell keeps its premise by
        applying only after the write and stepping inputs only between Readies.
        """
        core, transport = self.core, self.transport
        assert core is not None and transport is not None
        early = early_messages(rd, core.role is Role.LEADER, self._durable_vote)
        for m in early:
            transport.send(m)
        return bool(early)

    def _apply(self, entry: Entry) -> None:
        self.applied = entry.index
        self.applied_term = entry.term
        self.stats.applied_entries += 1
        if entry.type is EntryType.CONF_CHANGE:
            self._apply_conf_change(entry)
            return
        if len(entry.data) < RID_BYTES:
            return  # a new leader's empty no-op entry
        rid, data = entry.data[:RID_BYTES], entry.data[RID_BYTES:]
        result = self.sm.apply(entry.index, data)
        self._resolve(rid, result)

    def _apply_conf_change(self, entry: Entry) -> None:
        cc = codec.decode_conf_change(entry.data, f"entry[{entry.index}].data")
        rid, addr, app = None, None, b""
        if cc.context:
            try:
                ctx = _unpack(cc.context)
                rid, addr, app = ctx.get("rid"), ctx.get("addr"), ctx.get("app") or b""
            except Exception:  # a context from another shell: membership still applies
                log.warning("entry %d: conf change context not understood", entry.index)
        transport = self.transport
        assert transport is not None
        if cc.type in (ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER):
            if isinstance(addr, list) and len(addr) == 2:
                self.addresses[cc.node_id] = (str(addr[0]), int(addr[1]))
                transport.set_peer(cc.node_id, self.addresses[cc.node_id])
        elif cc.type is ConfChangeType.REMOVE_NODE:
            if cc.node_id == self.cfg.node_id:
                self.removed = True
                log.warning("node %d was removed from the cluster", cc.node_id)
            else:
                self.addresses.pop(cc.node_id, None)
                transport.remove_peer(cc.node_id)
        hook = getattr(self.sm, "apply_conf_change", None)
        if hook is not None:
            hook(entry.index, cc.type, cc.node_id, app if isinstance(app, bytes) else b"")
        if self.removed and cc.node_id == self.cfg.node_id and self.on_removed is not None:
            self.on_removed()
        if isinstance(rid, bytes):
            self._resolve(rid, entry.index)

    def _reask_reads(self, leader: int) -> None:
        """Ask again, of the new leader (or once one is known), reads the old one held."""
        for rid, asked in list(self._remote_reads.items()):
            if asked != leader:
                del self._remote_reads[rid]
                if rid in self._waiting:
                    self._push("read", rid)

    def _serve_reads(self) -> None:
        if not self._reads:
            return
        keep = []
        for index, rid in self._reads:
            if index <= self.applied:
                self._resolve(rid, index)
            else:
                keep.append((index, rid))
        self._reads = keep

    async def _take_snapshot(self) -> None:
        core, storage = self.core, self.storage
        assert core is not None and storage is not None
        index = self.applied
        # The event loop stands still while the state is copied, so heartbeats wait
        # too. Copying creates one small object per key and event, and with the
        # collector on each batch of them triggers a pass over the whole heap: a
        # 100,000-key store with its event history took 0.77 s instead of 0.18 s.
        collecting = gc.isenabled()
        gc.disable()
        try:
            data = _pack({"app": self.sm.snapshot(), "peers": {
                str(k): list(v) for k, v in self.addresses.items()
            }})
        finally:
            if collecting:
                gc.enable()
        snap = core.compact(index, data)
        del data
        await asyncio.get_running_loop().run_in_executor(
            self._executor, storage.save_local_snapshot, snap
        )
        self._last_snapshot = index
        self.stats.snapshots_taken += 1
        self._keep_snapshot_on_disk_only()

    def _keep_snapshot_on_disk_only(self) -> None:
        """Drop the latest snapshot's bytes from memory once its file is durable.

        The core keeps its snapshot only to send it to a follower that fell behind the
        compacted log, which is rare, while the bytes (the whole serialised state) would
        stay resident for good; `_with_snapshot_data` reads them back when needed.
        """
        core, storage = self.core, self.storage
        assert core is not None and storage is not None
        snap = core.log.snapshot
        if snap.data and snap.meta == storage.snapshot_meta:
            core.log.snapshot = Snapshot(snap.meta)

    def _with_snapshot_data(self, m: Message) -> Message | None:
        """``m`` with its snapshot's bytes, read back from its file if they were dropped
        (a snapshot without bytes is never sent: the follower would install an empty
        state); None if they cannot be read (the core is told, and probes again)."""
        snap = m.snapshot
        if snap is None or snap.data or snap.is_empty:
            return m
        storage = self.storage
        assert storage is not None
        try:
            return dataclasses.replace(m, snapshot=storage.read_snapshot(snap.meta))
        except (OSError, StorageCorruptError) as exc:
            log.error("node %d: cannot send snapshot %d to %d: %s", self.cfg.node_id,
                      snap.meta.index, m.to, exc)
            return None

    def _restore(self, data: bytes) -> None:
        if not data:
            return  # the core's bootstrap snapshot: membership only, empty application
        obj = _unpack(data)
        self.sm.restore(obj["app"])
        for key, addr in obj["peers"].items():
            pid = int(key)
            self.addresses[pid] = (str(addr[0]), int(addr[1]))
            if self.transport is not None:
                self.transport.set_peer(pid, self.addresses[pid])


# -- demo member -------------------------------------------------------------------------


class ListMachine:
    """Demo state machine: the ordered list of every applied value."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def apply(self, index: int, data: bytes) -> int:
        self.values.append(data.decode("utf-8", "replace"))
        return index

    def snapshot(self) -> bytes:
        return _pack(self.values)

    def restore(self, data: bytes) -> None:
        self.values = list(_unpack(data))


def _parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _parse_peers(text: str) -> dict[int, Address]:
    peers: dict[int, Address] = {}
    for item in filter(None, text.split(",")):
        ident, sep, addr = item.partition("=")
        if not sep or not ident.isdigit():
            raise argparse.ArgumentTypeError(f"--peers: expected id=host:port, got {item!r}")
        peers[int(ident)] = _parse_address(addr)
    return peers


class DemoServer:
    """One JSON object per line in, one per line out (test and benchmark plumbing)."""

    def __init__(self, shell: RaftShell, sm: ListMachine) -> None:
        self.shell = shell
        self.sm = sm
        self.writers: set[asyncio.StreamWriter] = set()

    def abort_clients(self) -> None:
        """End client connections so their handlers finish before the loop closes."""
        for writer in list(self.writers):
            writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while line := await reader.readline():
                try:
                    reply = await self.dispatch(json.loads(line))
                except NotLeader as exc:
                    reply = {"ok": False, "error": "not_leader", "leader": exc.leader}
                except ProposalTimeout as exc:
                    reply = {"ok": False, "error": "timeout", "detail": str(exc)}
                except (ProposalDropped, ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": "refused", "detail": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        shell = self.shell
        if op == "put":
            return {"ok": True, "index": await shell.propose(str(req["value"]).encode())}
        if op == "values":
            if req.get("linearizable", True):
                await shell.read_index()
            return {"ok": True, "applied": shell.applied, "values": self.sm.values}
        if op == "status":
            st = shell.status()
            return {
                "ok": True, "id": st.id, "role": st.role.value, "leader": st.leader,
                "term": st.term, "commit": st.commit, "applied": shell.applied,
                "voters": list(st.voters), "learners": list(st.learners),
                "removed": shell.removed, "count": len(self.sm.values),
                "stats": {"readies": shell.stats.readies,
                          "fsyncs": shell.storage.fsyncs if shell.storage else 0,
                          "snapshots_taken": shell.stats.snapshots_taken,
                          "snapshots_installed": shell.stats.snapshots_installed,
                          "forwarded": shell.stats.proposals_forwarded},
            }
        if op == "add":
            addr = _parse_address(req["addr"])
            index = await shell.add_member(int(req["id"]), addr, learner=bool(req.get("learner")))
            return {"ok": True, "index": index}
        if op == "remove":
            return {"ok": True, "index": await shell.remove_member(int(req["id"]))}
        raise ValueError(f"op: unknown operation {op!r}")


async def _serve(args: argparse.Namespace) -> None:
    peers = args.peers
    listen = args.listen or peers.get(args.id)
    if listen is None:
        raise SystemExit("--listen is required when --peers does not name this node")
    server_ssl = client_ssl = None
    if args.peer_cert:
        files = (args.peer_cert, args.peer_key, args.peer_ca)
        server_ssl, client_ssl = tls.server_context(*files), tls.client_context(*files)
    cfg = ShellConfig(
        node_id=args.id,
        data_dir=Path(args.data_dir),
        listen=listen,
        peers={k: v for k, v in peers.items() if k != args.id},
        cluster=args.cluster,
        join=args.join,
        tick_seconds=args.tick_ms / 1000,
        election_tick=args.election_ticks,
        snapshot_every=args.snapshot_every,
        proposal_timeout=args.proposal_timeout,
        fsync=not args.no_fsync,
        segment_bytes=args.segment_bytes,
        server_ssl=server_ssl,
        client_ssl=client_ssl,
    )
    sm = ListMachine()
    shell = RaftShell(cfg, sm)
    stop = asyncio.Event()
    shell.on_failure = lambda exc: stop.set()
    await shell.start()
    demo = DemoServer(shell, sm)
    server = await asyncio.start_server(demo.handle, *args.client)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready node={args.id} client={args.client[0]}:{args.client[1]}", flush=True)
    await stop.wait()
    server.close()
    demo.abort_clients()
    await asyncio.sleep(0)
    await shell.stop()
    if shell.failed is not None:
        raise SystemExit(f"node {args.id}: stopped after an internal error: {shell.failed!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flotilla.daemons.raft.node", description=(
        "Run one demo Raft member (an append-only list) for tests and benchmarks."))
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--peers", type=_parse_peers, default={}, help="id=host:port,...")
    p.add_argument("--listen", type=_parse_address, help="peer address (default: from --peers)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--client", type=_parse_address, required=True, help="host:port")
    p.add_argument("--cluster", default="flotilla")
    p.add_argument("--join", action="store_true", help="join an existing cluster")
    p.add_argument("--tick-ms", type=float, default=100.0)
    p.add_argument("--election-ticks", type=int, default=10)
    p.add_argument("--snapshot-every", type=int, default=10_000)
    p.add_argument("--proposal-timeout", type=float, default=5.0)
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--segment-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--peer-cert")
    p.add_argument("--peer-key")
    p.add_argument("--peer-ca")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s node{args.id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(args))
    except (WalCorruptError, StorageCorruptError) as exc:
        print(f"node {args.id}: refusing to start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
