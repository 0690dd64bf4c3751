"""The engine: one leader in the cluster turns desired state into a schedule.

Leadership is a TTL lease key (``lease/engine-leader``, TTL 5 x reconcile interval)
created with prevExist=false and renewed with prevIndex, as fleet does. Every engine
watches ``machines/`` (only joins, leaves and metadata changes make events): when the
machine holding the lease leaves, a waiting engine takes the lease over at once with
compare-and-swap on its index instead of waiting out the lease TTL, so a dead leader
costs no more than any dead machine (agent_ttl, not agent_ttl plus the lease TTL). A
leader whose machine key merely lapsed loses its next renewal and steps down. Only
the leader watches ``job/``; it reconciles on every change (batched) and
on a timer, using ``scheduler.decide`` for placement, then writes each machine's
``assignments/<machine>/`` so agents only see what concerns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable

from flotilla.daemons.kvclient import (
    ClusterUnavailable,
    EtcdError,
    KeyNotFound,
    Mirror,
    Node,
    NodeExist,
    TestFailed,
)

from . import model
from .presence import PresenceDamper
from .registry import ENGINE_VERSION, Registry, ints_to_hash, machines_from_nodes
from .scheduler import (
    Assignment,
    Job,
    Machine,
    Schedule,
    Unschedule,
    apply_changes,
    decide,
    machine_assignments,
)
from .streamwatch import StreamMirror
from .tasks import cancel_and_wait

log = logging.getLogger("fleet.engine")

GC_INTERVAL = 60.0  # how often the leader looks for unit files no job uses
GC_MIN_AGE = 60.0  # an unused file must stay unused this long (the API writes the
#                    file just before the job that uses it)


def collectable(
    stored: dict[str, int], referenced: set[str], first_unused: dict[tuple[str, int], float],
    now: float, min_age: float = GC_MIN_AGE,
) -> tuple[list[tuple[str, int]], dict[tuple[str, int], float]]:
    """Unit files (hash, modifiedIndex) to delete, and the updated "unused since" table.

    fleet never deletes ``unit/<hash>`` keys, so the store grows with every edited unit.
    A file goes only once no job has referred to it for ``min_age`` seconds *at the same
    modifiedIndex*: the API rewrites the file on every submit, which restarts the clock,
    and the delete is conditional on that index, so a file being submitted again is
    never removed from under its new job.
    """
    unused = {(h, index) for h, index in stored.items() if h not in referenced}
    table = {entry: first_unused.get(entry, now) for entry in unused}
    doomed = sorted(entry for entry, since in table.items() if now - since >= min_age)
    for entry in doomed:
        del table[entry]
    return doomed, table


class Engine:
    def __init__(self, registry: Registry, machine_id: str, *, interval: float = 2.0,
                 agent_ttl: float = 30.0,
                 cpu_clock: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        #: departures are judged against machines seen before: see `presence`
        #: an agent needs up to one request timeout to notice that a refresh is lost,
        #: then a refresh period to register again: hold departures for all of it
        request_timeout = float(getattr(registry.kv, "request_timeout", 0.0))
        self.presence = PresenceDamper(hold_seconds=2 * agent_ttl + request_timeout,
                                       outage_seconds=agent_ttl / 2)
        self.clock = clock
        self.kv = registry.kv
        self.keys = registry.keys
        self.machine_id = machine_id
        self.interval = interval
        self.lease_ttl = max(1, math.ceil(5 * interval))
        self.lease_index: int | None = None
        self.assigned: dict[str, dict[str, Assignment]] = {}
        self._wake = asyncio.Event()
        self._jobs_mirror: Mirror | None = None
        self._machines_mirror: Mirror | None = None
        self._departed: set[str] = set()  # machines whose presence key went away
        self._mirror_tasks: list[asyncio.Task] = []
        self.reconciles = 0
        self.cpu_clock = cpu_clock
        self.cpu_seconds = 0.0
        self.bad_units: dict[str, str] = {}
        self._hash_of_object: dict[str, str] = {}
        self._unused_since: dict[tuple[str, int], float] = {}
        self._referenced: set[str] = set()
        self._requirements: dict[tuple[str, str], model.Requirements | None] = {}

    @property
    def is_leader(self) -> bool:
        return self.lease_index is not None

    # ------------------------------------------------------------ leadership

    def _lease_value(self) -> str:
        return json.dumps({"MachineID": self.machine_id, "Version": ENGINE_VERSION})

    async def _hold_lease(self) -> bool:
        key = self.keys.leader_lease()
        sent = self.clock()
        try:
            if self.lease_index is None:
                reply = await self.kv.create(key, self._lease_value(), ttl=self.lease_ttl)
            else:
                reply = await self.kv.set(key, self._lease_value(), ttl=self.lease_ttl,
                                          prev_index=self.lease_index)
            self.lease_index = reply.node.modified_index
            self._store_answered()
            return True
        except NodeExist:
            self._store_answered()
            return False
        except (KeyNotFound, EtcdError, ClusterUnavailable) as error:
            if isinstance(error, ClusterUnavailable):
                self.presence.note_store_trouble(self.clock(), since=sent)
            else:
                self._store_answered()
            if self.lease_index is not None:
                log.warning("engine lost leadership: %s", error)
            self.lease_index = None
            return False

    def _store_answered(self) -> None:
        """After the store was out of reach, read presence (and jobs) afresh: the open
        streams may still be stalled in TCP retransmission while the agents register."""
        if self.presence.note_store_ok():
            for mirror in (self._machines_mirror, self._jobs_mirror):
                if isinstance(mirror, StreamMirror):
                    mirror.resync()

    async def release(self) -> None:
        await self._stop_mirrors()
        if self.lease_index is not None:
            with contextlib.suppress(KeyNotFound, EtcdError, ClusterUnavailable):
                await self.kv.compare_and_delete(self.keys.leader_lease(),
                                                 prev_index=self.lease_index)
        self.lease_index = None

    async def _start_mirrors(self) -> None:
        self._jobs_mirror = StreamMirror(self.kv, self.keys.job_dir(), self._on_change)
        self._mirror_tasks = [asyncio.create_task(self._jobs_mirror.run())]
        assert self._machines_mirror is not None
        await asyncio.wait_for(
            asyncio.gather(self._jobs_mirror.ready.wait(), self._machines_mirror.ready.wait()),
            timeout=max(5.0, self.lease_ttl),
        )
        self.assigned = await self._load_assignments()

    async def _stop_mirrors(self) -> None:
        await cancel_and_wait(self._mirror_tasks)
        self._mirror_tasks = []
        self._jobs_mirror = None

    def _on_change(self, changes: dict[str, Node | None], full: bool) -> None:
        self._wake.set()

    def _on_machines(self, changes: dict[str, Node | None], full: bool) -> None:
        for key, node in changes.items():
            parts = self.keys.split(key)
            if node is None and len(parts) == 3 and parts[2] == "object":
                self._departed.add(parts[1])
        self._wake.set()

    async def _take_over_from_departed(self) -> bool:
        """Takes the lease if its holder's machine has left; True when we now lead.

        The swap is conditional on the lease's index, so of several engines seeing the
        same departure exactly one wins, and a holder that renewed meanwhile keeps it.
        """
        departed, self._departed = self._departed, set()
        key = self.keys.leader_lease()
        try:
            reply = await self.kv.get(key)
        except KeyNotFound:
            return await self._hold_lease()  # already expired: an ordinary acquire
        except (EtcdError, ClusterUnavailable):
            return False
        try:
            holder = str(json.loads(reply.node.value or "{}").get("MachineID", ""))
        except ValueError:
            holder = ""
        mirror = self._machines_mirror
        present = mirror is not None and self.keys.machine(holder) in mirror.nodes
        if holder not in departed or present or holder == self.machine_id:
            return False
        try:
            taken = await self.kv.compare_and_swap(
                key, self._lease_value(), prev_index=reply.node.modified_index,
                ttl=self.lease_ttl)
        except (TestFailed, KeyNotFound, EtcdError, ClusterUnavailable):
            return False
        self.lease_index = taken.node.modified_index
        log.info("engine lease taken over from departed machine %s", holder)
        return True

    async def run(self) -> None:
        """Hold or seek the lease every interval; reconcile while leader."""
        self._machines_mirror = StreamMirror(self.kv, self.keys.machines_dir(),
                                            self._on_machines)
        presence = asyncio.create_task(self._machines_mirror.run(), name="engine-machines")
        try:
            await self._run()
        finally:
            await cancel_and_wait([presence])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_lease = 0.0
        next_gc = loop.time() + GC_INTERVAL
        while True:
            takeover = bool(self._departed) and not self.is_leader
            if not takeover:
                self._departed.clear()
            if loop.time() >= next_lease or takeover:
                was_leader = self.is_leader
                leader = await self._hold_lease()
                if not leader and takeover:
                    leader = await self._take_over_from_departed()
                next_lease = loop.time() + self.interval
                if leader and not was_leader:
                    log.info("engine leadership acquired by %s", self.machine_id)
                    try:
                        await self._start_mirrors()
                    except Exception as error:
                        log.warning("engine could not load state: %s", error)
                        await self.release()
                        continue
                elif was_leader and not leader:
                    await self._stop_mirrors()
            mirror = self._machines_mirror
            if not self.is_leader and mirror is not None and mirror.ready.is_set():
                # A waiting engine follows presence too, so that if it takes over right
                # after a store outage it knows which machines were there before.
                self.presence.machines(self._present_machines(), self.clock())
            if self.is_leader:
                self._wake.clear()
                try:
                    await self.reconcile()
                except Exception:
                    log.exception("engine reconcile failed")
                if loop.time() >= next_gc:
                    next_gc = loop.time() + GC_INTERVAL
                    try:
                        await self.collect_unit_files(loop.time())
                    except (EtcdError, ClusterUnavailable) as error:
                        log.warning("unit file collection failed: %s", error)
            timeout = max(0.0, next_lease - loop.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._wake.is_set():
                await asyncio.sleep(0.05)  # let a burst of events land in one pass

    # ------------------------------------------------------------ reconcile

    async def _load_assignments(self) -> dict[str, dict[str, Assignment]]:
        result: dict[str, dict[str, Assignment]] = {}
        try:
            reply = await self.kv.get(self.keys.assignments_dir(), recursive=True, quorum=True)
            nodes = reply.node.leaves()
        except KeyNotFound:
            nodes = []
        for node in nodes:
            parts = self.keys.split(node.key)
            if len(parts) != 3:
                continue
            try:
                data = json.loads(node.value or "{}")
                result.setdefault(parts[1], {})[parts[2]] = Assignment(
                    str(data["UnitHash"]), str(data["TargetState"]), bool(data.get("Global")))
            except (ValueError, KeyError):
                continue
        return result

    async def _snapshot(self) -> tuple[dict[str, Machine], dict[str, Job], dict[str, str]]:
        assert self._jobs_mirror is not None and self._machines_mirror is not None
        fields: dict[str, dict[str, str]] = {}
        for key, node in self._jobs_mirror.nodes.items():
            parts = self.keys.split(key)
            if len(parts) == 3:
                fields.setdefault(parts[1], {})[parts[2]] = node.value or ""
        hashes: dict[str, str] = {}
        for name, values in fields.items():
            raw = values.get("object")
            if raw is None:
                continue
            unit_hash = self._hash_of_object.get(raw)
            if unit_hash is None:
                try:
                    unit_hash = ints_to_hash(json.loads(raw).get("UnitHash"))
                except (ValueError, AttributeError):
                    continue
                if len(self._hash_of_object) > 100_000:
                    self._hash_of_object.clear()
                self._hash_of_object[raw] = unit_hash
            hashes[name] = unit_hash
        self._referenced = set(hashes.values())
        await self.registry.prefetch_unit_files(set(hashes.values()))
        jobs: dict[str, Job] = {}
        schedule: dict[str, str] = {}
        for name, unit_hash in hashes.items():
            requirements = self._requirements_of(name, unit_hash)
            if requirements is None:
                continue
            state = fields[name].get("target-state", "inactive")
            if state not in model.DESIRED_STATES:
                state = "inactive"
            jobs[name] = Job(name, state, requirements, unit_hash)
            if fields[name].get("target"):
                schedule[name] = fields[name]["target"]
        machines = self.presence.machines(self._present_machines(), self.clock())
        return machines, jobs, schedule

    def _present_machines(self) -> dict[str, Machine]:
        """Machines whose presence key exists, from the machines mirror."""
        assert self._machines_mirror is not None
        states = machines_from_nodes(self.keys, list(self._machines_mirror.nodes.values()))
        return {m: Machine(m, dict(s.metadata), s.public_ip) for m, s in states.items()}

    def _requirements_of(self, name: str, unit_hash: str) -> model.Requirements | None:
        """Parsed once per (unit, file): a unit's file never changes under its hash."""
        key = (name, unit_hash)
        if key in self._requirements:
            return self._requirements[key]
        options = self.registry._unit_cache.get(unit_hash)
        if options is None:
            return None
        try:
            requirements: model.Requirements | None = model.requirements(name, options)
        except model.UnitError as error:
            self.bad_units[name] = str(error)
            requirements = None
        if len(self._requirements) > 100_000:
            self._requirements.clear()
        self._requirements[key] = requirements
        return requirements

    async def collect_unit_files(self, now: float) -> list[str]:
        """Delete unit files unused for GC_MIN_AGE; returns the hashes deleted."""
        try:
            reply = await self.kv.get(f"{self.keys.prefix}/unit")
            stored = {node.key.rsplit("/", 1)[-1]: node.modified_index
                      for node in reply.node.nodes}
        except KeyNotFound:
            stored = {}
        doomed, self._unused_since = collectable(stored, self._referenced,
                                                 self._unused_since, now)
        for unit_hash, index in doomed:
            with contextlib.suppress(KeyNotFound, TestFailed):
                await self.kv.compare_and_delete(self.keys.unit(unit_hash), prev_index=index)
            self.registry._unit_cache.pop(unit_hash, None)
        if doomed:
            log.info("deleted %d unused unit files", len(doomed))
        return [unit_hash for unit_hash, _ in doomed]

    async def reconcile(self) -> None:
        started = self.cpu_clock()
        self.reconciles += 1
        machines, jobs, schedule = await self._snapshot()
        changes = decide(machines, jobs, schedule)
        writes = []
        for change in changes:
            if isinstance(change, Unschedule):
                log.info("unscheduling %s from %s: %s", change.unit, change.machine,
                         change.reason)
                writes.append(self.kv.compare_and_delete(
                    self.keys.job(change.unit, "target"), prev_value=change.machine))
            elif isinstance(change, Schedule):
                writes.append(self.kv.create(self.keys.job(change.unit, "target"),
                                             change.machine))
        failed = set()
        results = await self.registry.gather_limited(writes) if writes else []
        mirror = self._jobs_mirror
        for change, result in zip(changes, results, strict=True):
            key = self.keys.job(change.unit, "target")
            if isinstance(result, Exception):
                if not isinstance(result, KeyNotFound):
                    failed.add(change.unit)
            elif mirror is not None and isinstance(change, Schedule):
                mirror.local_set(key, change.machine, result.node.modified_index)
            elif mirror is not None:
                mirror.local_delete(key, result.node.modified_index)
        new_schedule = apply_changes(schedule, [c for c in changes if c.unit not in failed])
        for unit in failed:  # keep the old placement for anything the store refused
            if unit in schedule:
                new_schedule[unit] = schedule[unit]
            else:
                new_schedule.pop(unit, None)
        await self._write_assignments(machine_assignments(machines, jobs, new_schedule))
        self.cpu_seconds += self.cpu_clock() - started

    async def _write_assignments(self, desired: dict[str, dict[str, Assignment]]) -> None:
        writes = []
        updates: list[tuple[str, str, Assignment | None]] = []
        for machine, units in desired.items():
            have = self.assigned.get(machine, {})
            for unit, assignment in units.items():
                if have.get(unit) != assignment:
                    writes.append(self.kv.set(self.keys.assignments(machine, unit),
                                              self._assignment_json(assignment)))
                    updates.append((machine, unit, assignment))
            for unit in have:
                if unit not in units:
                    writes.append(self._delete_quietly(self.keys.assignments(machine, unit)))
                    updates.append((machine, unit, None))
        for machine in self.assigned:
            if machine not in desired:
                writes.append(self._delete_quietly(self.keys.assignments(machine),
                                                   recursive=True))
                updates.append((machine, "", None))
        if not writes:
            return
        results = await self.registry.gather_limited(writes)
        for (machine, unit, assignment), result in zip(updates, results, strict=True):
            if isinstance(result, Exception):
                log.warning("assignment write for %s/%s failed: %s", machine, unit, result)
                continue
            if unit == "":
                self.assigned.pop(machine, None)
            elif assignment is None:
                self.assigned.get(machine, {}).pop(unit, None)
            else:
                self.assigned.setdefault(machine, {})[unit] = assignment

    def _assignment_json(self, assignment: Assignment) -> str:
        """The assignment with its unit file inside, so the agent needs no second read."""
        payload = assignment.to_json()
        options = self.registry._unit_cache.get(assignment.unit_hash)
        if options is not None:
            payload["Raw"] = model.serialize_options(options)
        return json.dumps(payload)

    async def _delete_quietly(self, key: str, recursive: bool = False) -> None:
        with contextlib.suppress(KeyNotFound):
            await self.kv.delete(key, recursive=recursive)
