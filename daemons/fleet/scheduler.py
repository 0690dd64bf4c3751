"""The engine's placement decisions, as a pure function of the cluster state.

Given the live machines, the units and where each unit is scheduled now, ``decide``
returns the changes that bring the schedule in line with every unit's requirements:
unschedule what can no longer run where it is, then place each waiting unit on the
least-loaded machine able to run it (ties broken by machine id, so two engines looking
at the same state always agree). Global units are not scheduled; ``place_globals``
says which machines run each of them. No I/O and no clock, so every rule is tested
directly and the property tests can throw random clusters at it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .model import Requirements, glob_match


@dataclass(frozen=True)
class Machine:
    id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    public_ip: str = ""


@dataclass(frozen=True)
class Job:
    name: str
    target_state: str  # inactive | loaded | launched
    requirements: Requirements = field(default_factory=Requirements)
    unit_hash: str = ""

    @property
    def is_global(self) -> bool:
        return self.requirements.is_global

    @property
    def has_patterns(self) -> bool:
        """Whether this unit can clash with others at all (Conflicts or Replaces)."""
        return bool(self.requirements.conflicts or self.requirements.replaces)


@dataclass(frozen=True)
class Schedule:
    unit: str
    machine: str


@dataclass(frozen=True)
class Unschedule:
    unit: str
    machine: str
    reason: str


Change = Schedule | Unschedule


def resolve_machine_id(wanted: str, machine_ids: Iterable[str]) -> str | None:
    """The machine a ``MachineID=`` value names: the full id, or a unique prefix of one."""
    ids = list(machine_ids)
    if wanted in ids:
        return wanted
    matches = [machine_id for machine_id in ids if machine_id.startswith(wanted)]
    return matches[0] if len(matches) == 1 else None


def metadata_matches(required: Mapping[str, frozenset[str]], have: Mapping[str, str]) -> bool:
    """Every required key present with one of the listed values (OR within, AND across)."""
    return all(have.get(key) in values for key, values in required.items())


def replaces(replacer: Job, other: Job) -> bool:
    """``replacer`` pushes ``other`` off its machine (a circular pair replaces neither)."""
    forward = any(glob_match(p, other.name) for p in replacer.requirements.replaces)
    backward = any(glob_match(p, replacer.name) for p in other.requirements.replaces)
    return forward and not backward


def conflicts(a: Job, b: Job) -> bool:
    """Either unit's Conflicts globs match the other; a circular Replaces pair also clashes."""
    if a.name == b.name:
        return False
    ra, rb = a.requirements, b.requirements
    if any(glob_match(p, b.name) for p in ra.conflicts):
        return True
    if any(glob_match(p, a.name) for p in rb.conflicts):
        return True
    forward = any(glob_match(p, b.name) for p in ra.replaces)
    backward = any(glob_match(p, a.name) for p in rb.replaces)
    return forward and backward


class ClusterView:
    """Mutable working copy of who runs what, used while one decision is computed."""

    def __init__(
        self,
        machines: Mapping[str, Machine],
        jobs: Mapping[str, Job],
        schedule: Mapping[str, str],
    ) -> None:
        self.machines = machines
        self.jobs = jobs
        self.schedule: dict[str, str] = dict(schedule)
        self.on_machine: dict[str, set[str]] = {m: set() for m in machines}
        for unit, machine in self.schedule.items():
            self.on_machine.setdefault(machine, set()).add(unit)
        self.globals_on: dict[str, list[str]] = {}
        self._short_ids: dict[str, str | None] = {}

    def resolve(self, wanted: str) -> str | None:
        if wanted not in self._short_ids:
            self._short_ids[wanted] = resolve_machine_id(wanted, self.machines)
        return self._short_ids[wanted]

    def units_on(self, machine: str) -> Iterable[str]:
        yield from self.on_machine.get(machine, ())
        yield from self.globals_on.get(machine, ())

    def load(self, machine: str) -> int:
        return len(self.on_machine.get(machine, ())) + len(self.globals_on.get(machine, ()))

    def assign(self, unit: str, machine: str) -> None:
        self.schedule[unit] = machine
        self.on_machine.setdefault(machine, set()).add(unit)

    def release(self, unit: str) -> None:
        machine = self.schedule.pop(unit)
        self.on_machine.get(machine, set()).discard(unit)

    def unable_reason(self, job: Job, machine_id: str) -> str | None:
        """Why ``job`` may not run on ``machine_id`` (None when it may)."""
        machine = self.machines.get(machine_id)
        if machine is None:
            return f"target Machine({machine_id}) went away"
        req = job.requirements
        if req.machine_id is not None and self.resolve(req.machine_id) != machine_id:
            return f"unit requires Machine({req.machine_id})"
        if not metadata_matches(req.metadata, machine.metadata):
            return f"Machine({machine_id}) metadata does not match"
        for peer in req.machine_of:
            if self.schedule.get(peer) != machine_id:
                return f"peer {peer} is not scheduled to Machine({machine_id})"
        patterned = job.has_patterns
        for other_name in self.units_on(machine_id):
            other = self.jobs.get(other_name)
            if other is None or other.name == job.name:
                continue
            if not patterned and not other.has_patterns:
                continue
            if conflicts(job, other):
                return f"conflicts with {other.name} on Machine({machine_id})"
            if replaces(other, job):
                return f"replaced by {other.name} on Machine({machine_id})"
        return None

    def refresh_globals(self) -> None:
        self.globals_on = place_globals(self.machines, self.jobs, self.schedule)


def place_globals(
    machines: Mapping[str, Machine],
    jobs: Mapping[str, Job],
    schedule: Mapping[str, str],
) -> dict[str, list[str]]:
    """Which global units each machine runs.

    A machine runs every active global unit whose metadata it matches, skipping one
    that conflicts with a unit scheduled there or with a global chosen before it (in
    name order, so the outcome never depends on iteration order).
    """
    global_jobs = sorted(
        (job for job in jobs.values() if job.is_global and job.target_state != "inactive"),
        key=lambda job: job.name,
    )
    per_machine: dict[str, list[Job]] = {m: [] for m in machines}
    for unit, machine in schedule.items():
        job = jobs.get(unit)
        if job is not None and machine in per_machine:
            per_machine[machine].append(job)
    result: dict[str, list[str]] = {}
    for machine_id in sorted(machines):
        machine = machines[machine_id]
        present = per_machine[machine_id]
        chosen: list[str] = []
        for job in global_jobs:
            if not metadata_matches(job.requirements.metadata, machine.metadata):
                continue
            if any(conflicts(job, other) for other in present):
                continue
            present = [*present, job]
            chosen.append(job.name)
        result[machine_id] = chosen
    return result


def decide(
    machines: Mapping[str, Machine],
    jobs: Mapping[str, Job],
    schedule: Mapping[str, str],
) -> list[Change]:
    """The schedule changes that bring the cluster in line with every unit's requirements."""
    view = ClusterView(machines, jobs, schedule)
    view.refresh_globals()
    changes: list[Change] = []

    def unschedule(unit: str, reason: str) -> None:
        changes.append(Unschedule(unit, view.schedule[unit], reason))
        view.release(unit)

    # 1. Units already placed: keep them only while they may still run there.
    settled = False
    while not settled:
        settled = True
        for unit in sorted(view.schedule):
            job = jobs.get(unit)
            if job is None:
                unschedule(unit, "unit no longer exists")
            elif job.is_global:
                unschedule(unit, "global units are not scheduled")
            elif job.target_state == "inactive":
                unschedule(unit, "target state inactive")
            else:
                reason = view.unable_reason(job, view.schedule[unit])
                if reason is None:
                    continue
                unschedule(unit, reason)
            settled = False

    # 2. Units waiting for a machine, until a pass places nothing more (a MachineOf
    #    follower can only go once its peer is placed, whatever the name order).
    waiting = sorted(
        name
        for name, job in jobs.items()
        if not job.is_global and job.target_state != "inactive" and name not in view.schedule
    )
    heap = [(view.load(m), m) for m in machines]
    heapq.heapify(heap)
    progress = True
    while waiting and progress:
        progress = False
        still_waiting: list[str] = []
        for unit in waiting:
            job = jobs[unit]
            target = _least_loaded_able(view, job, heap)
            if target is None:
                still_waiting.append(unit)
                continue
            view.assign(unit, target)
            heapq.heappush(heap, (view.load(target), target))
            changes.append(Schedule(unit, target))
            progress = True
            for other in sorted(view.on_machine[target]):
                other_job = jobs.get(other)
                if other_job is not None and other != unit and replaces(job, other_job):
                    unschedule(other, f"replaced by {unit}")
                    heapq.heappush(heap, (view.load(target), target))
                    still_waiting.append(other)
        waiting = sorted(set(still_waiting))
    return changes


def _least_loaded_able(view: ClusterView, job: Job, heap: list[tuple[int, str]]) -> str | None:
    """The first machine by (load, id) able to run ``job``.

    ``heap`` holds (load, machine) entries; an entry whose load is no longer the
    machine's load is stale (a fresher one was pushed) and is dropped on the way.
    """
    if job.requirements.machine_id is not None:
        pinned = view.resolve(job.requirements.machine_id)
        if pinned is not None and view.unable_reason(job, pinned) is None:
            return pinned
        return None
    skipped: list[tuple[int, str]] = []
    found = None
    while heap:
        entry = heapq.heappop(heap)
        load, machine_id = entry
        if load != view.load(machine_id):
            continue
        skipped.append(entry)
        if view.unable_reason(job, machine_id) is None:
            found = machine_id
            break
    for entry in skipped:
        heapq.heappush(heap, entry)
    return found


def apply_changes(schedule: Mapping[str, str], changes: Iterable[Change]) -> dict[str, str]:
    """The schedule after ``changes``: what the engine expects the store to hold."""
    result = dict(schedule)
    for change in changes:
        if isinstance(change, Schedule):
            result[change.unit] = change.machine
        elif result.get(change.unit) == change.machine:
            del result[change.unit]
    return result


@dataclass(frozen=True)
class Assignment:
    """What one machine is told about one unit: which file and how far to take it."""

    unit_hash: str
    target_state: str
    is_global: bool = False

    def to_json(self) -> dict[str, object]:
        return {"UnitHash": self.unit_hash, "TargetState": self.target_state,
                "Global": self.is_global}


def machine_assignments(
    machines: Mapping[str, Machine],
    jobs: Mapping[str, Job],
    schedule: Mapping[str, str],
) -> dict[str, dict[str, Assignment]]:
    """Every machine's full list of units to hold, from the schedule plus global units."""
    result: dict[str, dict[str, Assignment]] = {m: {} for m in machines}
    for unit, machine in schedule.items():
        job = jobs.get(unit)
        if job is None or machine not in result or job.target_state == "inactive":
            continue
        result[machine][unit] = Assignment(job.unit_hash, job.target_state)
    for machine, units in place_globals(machines, jobs, schedule).items():
        for unit in units:
            job = jobs[unit]
            result[machine][unit] = Assignment(job.unit_hash, job.target_state, True)
    return result
