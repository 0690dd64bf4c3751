"""The agent: runs on every machine and makes systemd hold what the engine assigned it.

It announces the machine with a TTL key, follows only its own ``assignments/<id>/``
directory, turns the difference between that and what it has loaded into tasks
(``agentplan.plan``), runs them through the SystemdManager, and publishes each unit's
load/active/sub state as systemd reports it. A stop always completes (the job has
finished) before a unit's file is removed, so ExecStop= runs on destroy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from pathlib import Path

from flotilla.daemons.durable import write_atomic
from flotilla.daemons.kvclient import (
    ClusterUnavailable,
    EtcdError,
    KeyNotFound,
    KVClient,
    Node,
    NodeExist,
)

from . import model
from .agentplan import LocalUnit, Task, plan
from .registry import MachineState, Registry
from .scheduler import Assignment
from .streamwatch import StreamMirror
from .systemd_iface import SystemdManager, UnitStatus
from .tasks import cancel_and_wait

log = logging.getLogger("fleet.agent")

RECOGNIZED_TYPES = ("service", "socket", "timer", "path", "device", "mount", "automount")
RECONCILE_INTERVAL = 5.0
#: How long a purge waits for each unit's stop job. systemd carries on with the job
#: regardless; the bound keeps fleetd's own stop inside TimeoutStopSec (90 s) even when
#: the job's completion signal never reaches us.
PURGE_JOB_SECONDS = 15.0
#: Bound on the whole purge before the machine leaves the cluster anyway.
PURGE_SECONDS = 60.0


class Agent:
    def __init__(
        self,
        registry: Registry,
        systemd: SystemdManager,
        machine: MachineState,
        *,
        units_dir: str | Path,
        ttl: float,
        reconcile_interval: float = RECONCILE_INTERVAL,
        previous_registration: str | None = None,
    ) -> None:
        self.registry = registry
        self.kv: KVClient = registry.kv
        self.keys = registry.keys
        self.systemd = systemd
        self.machine = machine
        self.units_dir = Path(units_dir)
        self.ttl = max(1, math.ceil(ttl))
        self.reconcile_interval = reconcile_interval
        # What this process registered before a configuration reload: still ours.
        self.previous_registration = previous_registration
        self.current: dict[str, LocalUnit] = {}
        self.statuses: dict[str, UnitStatus] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._publish = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.mirror = StreamMirror(self.kv, self.keys.assignments(machine.id),
                                   self._on_assignments)
        self.reconciles = 0
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ lifecycle

    async def register(self, retry_delay: float = 1.0) -> None:
        """Create this machine's presence key; wait while another fleetd still holds it."""
        key = self.keys.machine(self.machine.id)
        while True:
            try:
                await self.kv.create(key, self.machine.to_json(), ttl=self.ttl)
                return
            except NodeExist:
                if await self._take_over_own_key(key):
                    return
                log.error("machine %s is already registered (another fleetd with this "
                          "machine id, or an old key not yet expired); retrying",
                          self.machine.id)
            except (ClusterUnavailable, EtcdError) as error:
                log.warning("registering machine failed: %s", error)
            await asyncio.sleep(retry_delay)

    async def _take_over_own_key(self, key: str) -> bool:
        """A key identical to ours (same id, address, metadata, API) is our previous run's.

        Taking it over at once lets a crashed fleetd come back without the engine seeing
        the machine vanish and moving every unit away. After a configuration reload the
        key still holds what this process registered before, which is ours as well. Any
        other value means another fleetd shares this machine id, which stays an error.
        """
        ours = {self.machine.to_json(), self.previous_registration}
        try:
            reply = await self.kv.get(key)
            if reply.node.value not in ours:
                return False
            await self.kv.compare_and_swap(key, self.machine.to_json(),
                                           prev_index=reply.node.modified_index, ttl=self.ttl)
        except (ClusterUnavailable, EtcdError):
            return False
        log.info("took over this machine's registration from a previous fleetd run")
        return True

    async def start(self) -> None:
        await self.adopt_local_units()
        await self.systemd.subscribe(self._on_status)
        await self.register()
        self._tasks = [
            asyncio.create_task(self.mirror.run(), name="agent-mirror"),
            asyncio.create_task(self._heartbeat_loop(), name="agent-heartbeat"),
            asyncio.create_task(self._reconcile_loop(), name="agent-reconcile"),
            asyncio.create_task(self._publish_loop(), name="agent-publish"),
        ]

    async def stop(self, purge: bool = True) -> None:
        """Stop following the store; with ``purge`` unload every unit and leave the cluster."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if not purge:
            return
        try:
            async with asyncio.timeout(PURGE_SECONDS), self._lock:
                for unit in sorted(self.current):
                    with contextlib.suppress(Exception):
                        await self._unload(unit, job_seconds=PURGE_JOB_SECONDS)
                with contextlib.suppress(Exception):
                    await self.systemd.reload()
        except TimeoutError:
            log.warning("purge: units still unloading after %.0fs; leaving the cluster "
                        "anyway", PURGE_SECONDS)
        with contextlib.suppress(KeyNotFound, ClusterUnavailable, EtcdError):
            await self.kv.delete(self.keys.machine(self.machine.id))

    async def adopt_local_units(self) -> None:
        """Take over unit files left by a previous run, keeping running units running."""
        if not self.units_dir.is_dir():
            return
        names = [p.name for p in self.units_dir.iterdir()
                 if p.is_file() and p.suffix.lstrip(".") in RECOGNIZED_TYPES]
        statuses = await self.systemd.unit_statuses(names) if names else {}
        for name in names:
            path = self.units_dir / name
            status = statuses.get(name)
            try:
                options = model.parse_unit_file(path.read_text())
            except (OSError, model.UnitError):
                options = None
            if options is None or status is None or status.load_state == "not-found":
                path.unlink(missing_ok=True)
                continue
            state = "launched" if status.active_state in ("active", "activating") else "loaded"
            self.current[name] = LocalUnit(model.unit_hash(options), state)
            self.statuses[name] = status
            self._dirty.add(name)

    # ------------------------------------------------------------ store input

    def desired(self) -> dict[str, Assignment]:
        result = {}
        for key, node in self.mirror.nodes.items():
            unit = key.rsplit("/", 1)[-1]
            try:
                data = json.loads(node.value or "{}")
                result[unit] = Assignment(str(data["UnitHash"]), str(data["TargetState"]),
                                          bool(data.get("Global", False)))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring malformed assignment %s", key)
        return result

    def _on_assignments(self, changes: dict[str, Node | None], full: bool) -> None:
        self._wake.set()

    # ------------------------------------------------------------ loops

    async def _heartbeat_loop(self) -> None:
        key = self.keys.machine(self.machine.id)
        while True:
            await asyncio.sleep(self.ttl / 2)
            try:
                await self.kv.refresh(key, self.ttl)
            except KeyNotFound:
                log.warning("machine key expired; registering again")
                with contextlib.suppress(EtcdError, ClusterUnavailable):
                    await self.kv.set(key, self.machine.to_json(), ttl=self.ttl)
            except (ClusterUnavailable, EtcdError) as error:
                log.warning("heartbeat failed: %s", error)

    async def _reconcile_loop(self) -> None:
        await self.mirror.ready.wait()
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("agent reconcile failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.reconcile_interval)

    async def reconcile(self) -> None:
        async with self._lock:
            self.reconciles += 1
            desired = self.desired()
            tasks = plan(desired, self.current)
            failed: set[str] = set()
            starts = [t for t in tasks if t.kind == "start"]
            stops = [t for t in tasks if t.kind == "stop"]
            await self._run_concurrently(stops, failed, desired)
            for task in tasks:
                if task.kind in ("start", "stop") or task.unit in failed:
                    continue
                try:
                    await self._run(task, desired)
                except Exception as error:
                    log.error("%s %s failed: %s", task.kind, task.unit or "-", error)
                    failed.add(task.unit)
            await self._run_concurrently(starts, failed, desired)

    async def _run_concurrently(self, tasks: list[Task], failed: set[str],
                                desired: dict[str, Assignment]) -> None:
        runnable = [t for t in tasks if t.unit not in failed]
        results = await asyncio.gather(*(self._run(t, desired) for t in runnable),
                                       return_exceptions=True)
        for task, result in zip(runnable, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s %s failed: %s", task.kind, task.unit, result)
                failed.add(task.unit)

    async def _run(self, task: Task, desired: dict[str, Assignment]) -> None:
        if task.kind == "reload":
            await self.systemd.reload()
            names = sorted(self.current)
            for name, status in (await self.systemd.unit_statuses(names)).items():
                self._on_status(name, status)
        elif task.kind == "load":
            await self._load(task.unit, task.unit_hash)
        elif task.kind == "unload":
            await self._unload(task.unit)
        elif task.kind == "start":
            await self.systemd.start_unit(task.unit)
            self.current[task.unit] = LocalUnit(self.current[task.unit].unit_hash, "launched")
            if not desired[task.unit].is_global:
                await self.kv.set(self.keys.job(task.unit, "job-state"), self.machine.id,
                                  ttl=self.ttl)
        elif task.kind == "stop":
            await self.systemd.stop_unit(task.unit)
            self.current[task.unit] = LocalUnit(self.current[task.unit].unit_hash, "loaded")
            await self._clear_job_state(task.unit)

    def _file_from_assignment(self, unit: str, unit_hash: str) -> None:
        """The engine sends the unit file along with the assignment; cache it if intact."""
        node = self.mirror.nodes.get(self.keys.assignments(self.machine.id, unit))
        if node is None:
            return
        try:
            raw = json.loads(node.value or "{}").get("Raw")
        except (ValueError, AttributeError):
            return
        if isinstance(raw, str):
            self.registry.remember_unit_file(unit_hash, raw)

    async def _load(self, unit: str, unit_hash: str) -> None:
        if unit_hash not in self.registry._unit_cache:
            self._file_from_assignment(unit, unit_hash)
        options = await self.registry.unit_options(unit_hash)
        if options is None:
            raise LookupError(f"unit file {unit_hash} missing from the store")
        path = self.units_dir / unit
        # Atomic so systemd never reads half a unit; not synced: the units directory is
        # runtime state (/run/fleet/units), rebuilt from the store whenever fleetd starts.
        write_atomic(path, model.serialize_options(options), sync=False)
        await self.systemd.link_unit_files([str(path)])
        if model.has_install_section(options):
            await self.systemd.enable_unit_files([str(path)])
        self.current[unit] = LocalUnit(unit_hash, "loaded")

    async def _unload(self, unit: str, job_seconds: float | None = None) -> None:
        """Stop ``unit`` (waiting for its stop job), then remove its files and state.

        ``job_seconds`` bounds the wait for the stop job; past it the job is left to
        systemd and the files go anyway (used when fleetd itself is stopping).
        """
        try:
            # returns once the stop job has finished
            await asyncio.wait_for(self.systemd.stop_unit(unit), job_seconds)
        except TimeoutError:
            log.warning("%s: stop job not finished after %.0fs; removing its files anyway",
                        unit, job_seconds)
        await self.systemd.disable_unit_files([unit])
        with contextlib.suppress(Exception):
            await self.systemd.reset_failed_unit(unit)
        (self.units_dir / unit).unlink(missing_ok=True)
        self.current.pop(unit, None)
        self.statuses.pop(unit, None)
        self._dirty.discard(unit)
        await self._clear_job_state(unit)
        with contextlib.suppress(KeyNotFound):
            await self.kv.delete(self.keys.state(unit, self.machine.id))

    async def _clear_job_state(self, unit: str) -> None:
        with contextlib.suppress(KeyNotFound, EtcdError):
            await self.kv.compare_and_delete(self.keys.job(unit, "job-state"),
                                             prev_value=self.machine.id)

    # ------------------------------------------------------------ state publishing

    def _on_status(self, name: str, status: UnitStatus) -> None:
        if name not in self.current:
            return
        if self.statuses.get(name) != status:
            self.statuses[name] = status
            self._dirty.add(name)
            self._publish.set()

    def _state_json(self, unit: str, status: UnitStatus) -> str:
        return json.dumps({
            "loadState": status.load_state, "activeState": status.active_state,
            "subState": status.sub_state, "machineState": {"ID": self.machine.id},
            "unitHash": self.current[unit].unit_hash if unit in self.current else "",
        })

    async def _publish_loop(self) -> None:
        """Push changed states at once; push out every TTL at ttl*4/5 without a write."""
        refresh_every = self.ttl * 4 / 5 if self.ttl > 10 else self.ttl / 2
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + refresh_every
        while True:
            timeout = max(0.0, next_refresh - loop.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._publish.wait(), timeout)
            self._publish.clear()
            dirty, self._dirty = self._dirty, set()
            units = [unit for unit in sorted(dirty) if unit in self.current]
            writes = [self._write_state(unit) for unit in units]
            if loop.time() >= next_refresh:
                next_refresh = loop.time() + refresh_every
                refreshed = [unit for unit in sorted(self.current) if unit not in dirty]
                units += refreshed
                writes += [self._refresh_state(unit) for unit in refreshed]
            results = await self.registry.gather_limited(writes)
            for unit, result in zip(units, results, strict=True):
                if isinstance(result, Exception):
                    self._dirty.add(unit)  # try again on the next pass

    async def _write_state(self, unit: str) -> None:
        status = self.statuses.get(unit)
        if status is None:
            return
        await self.kv.set(self.keys.state(unit, self.machine.id),
                          self._state_json(unit, status), ttl=self.ttl)

    async def _refresh_state(self, unit: str) -> None:
        try:
            await self.kv.refresh(self.keys.state(unit, self.machine.id), self.ttl)
        except KeyNotFound:
            await self._write_state(unit)
        local = self.current.get(unit)
        if local is not None and local.state == "launched":
            assignment = self.desired().get(unit)
            if assignment is not None and not assignment.is_global:
                try:
                    await self.kv.refresh(self.keys.job(unit, "job-state"), self.ttl)
                except KeyNotFound:
                    await self.kv.set(self.keys.job(unit, "job-state"), self.machine.id,
                                      ttl=self.ttl)

    # ------------------------------------------------------------ status / journal

    def holds(self, unit: str) -> bool:
        return unit in self.current

    async def status_text(self, unit: str) -> str:
        return await self.systemd.status_text(unit)

    async def journal(self, unit: str, lines: int) -> str:
        return await self.systemd.journal(unit, lines)
