"""fleet's key layout in the store, and the reads and writes the API makes on it.

The layout is fleet's own (default prefix ``/_coreos.com/fleet/``) so a cluster can be
inspected with any etcd v2 tool:

===================================  =====================================  =========
key                                  value                                  TTL
===================================  =====================================  =========
``job/<unit>/object``                ``{"Name","UnitHash":[20 ints]}``      -
``job/<unit>/target-state``          inactive / loaded / launched            -
``job/<unit>/target``                machine id (written by the engine)      -
``job/<unit>/job-state``             machine id while launched (agent)       agent_ttl
``unit/<sha1>``                      ``{"Raw": unit file text}``             -
``states/<unit>/<machine>``          systemd load/active/sub state           agent_ttl
``machines/<id>/object``             machine state                           agent_ttl
``machines/<id>/metadata/<key>``     metadata override                       -
``lease/engine-leader``              ``{"MachineID","Version"}``             5 x interval
===================================  =====================================  =========

One addition, ``assignments/<machine>/<unit>`` (``{"UnitHash","TargetState","Global"}``),
is written by the engine only: each agent watches its own directory, so a change to
one unit wakes one machine instead of every machine re-reading every job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from flotilla.daemons.kvclient import KeyNotFound, KVClient, Node

from . import model
from .model import UnitOption

DEFAULT_PREFIX = "/_coreos.com/fleet/"
BULK_READ_THRESHOLD = 8  # more missing unit files than this: read the directory once
ENGINE_VERSION = 1


def hash_to_ints(hex_hash: str) -> list[int]:
    return list(bytes.fromhex(hex_hash))


def ints_to_hash(values: object) -> str:
    if isinstance(values, str):
        return values
    if isinstance(values, list) and all(isinstance(v, int) and 0 <= v < 256 for v in values):
        return bytes(values).hex()
    raise ValueError("UnitHash: expected 20 byte values")


@dataclass
class MachineState:
    id: str
    public_ip: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    version: str = ""
    api_url: str = ""

    def to_json(self) -> str:
        return json.dumps({
            "ID": self.id, "PublicIP": self.public_ip, "Metadata": self.metadata,
            "Capabilities": {"GRPC": False, "DISABLE_ENGINE": False},
            "Version": self.version, "APIURL": self.api_url,
        })

    @classmethod
    def from_json(cls, raw: str) -> MachineState:
        data = json.loads(raw)
        return cls(id=str(data.get("ID", "")), public_ip=str(data.get("PublicIP", "")),
                   metadata={str(k): str(v) for k, v in (data.get("Metadata") or {}).items()},
                   version=str(data.get("Version", "")), api_url=str(data.get("APIURL", "")))


@dataclass
class UnitRecord:
    """A unit as the API presents it."""

    name: str
    options: list[UnitOption]
    unit_hash: str
    desired_state: str
    current_state: str = ""
    machine_id: str = ""
    is_global: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "options": [o.to_json() for o in self.options],
            "desiredState": self.desired_state,
        }
        if self.current_state:
            out["currentState"] = self.current_state
        if self.machine_id:
            out["machineID"] = self.machine_id
        return out


@dataclass
class UnitStateRecord:
    name: str
    unit_hash: str
    machine_id: str
    load_state: str
    active_state: str
    sub_state: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "hash": self.unit_hash, "machineID": self.machine_id,
                "systemdLoadState": self.load_state, "systemdActiveState": self.active_state,
                "systemdSubState": self.sub_state}


class Keys:
    """Builds every key from the configured prefix, so no module spells a path by hand."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = "/" + prefix.strip("/")

    def job_dir(self) -> str:
        return f"{self.prefix}/job"

    def job(self, unit: str, leaf: str = "") -> str:
        return f"{self.prefix}/job/{unit}" + (f"/{leaf}" if leaf else "")

    def unit(self, unit_hash: str) -> str:
        return f"{self.prefix}/unit/{unit_hash}"

    def states_dir(self) -> str:
        return f"{self.prefix}/states"

    def state(self, unit: str, machine: str = "") -> str:
        return f"{self.prefix}/states/{unit}" + (f"/{machine}" if machine else "")

    def machines_dir(self) -> str:
        return f"{self.prefix}/machines"

    def machine(self, machine: str) -> str:
        return f"{self.prefix}/machines/{machine}/object"

    def machine_metadata(self, machine: str, key: str) -> str:
        return f"{self.prefix}/machines/{machine}/metadata/{key}"

    def assignments(self, machine: str, unit: str = "") -> str:
        return f"{self.prefix}/assignments/{machine}" + (f"/{unit}" if unit else "")

    def assignments_dir(self) -> str:
        return f"{self.prefix}/assignments"

    def leader_lease(self) -> str:
        return f"{self.prefix}/lease/engine-leader"

    def engine_version(self) -> str:
        return f"{self.prefix}/engine/version"

    def split(self, key: str) -> list[str]:
        """Path parts after the prefix (``job/x.service/object`` → 3 parts)."""
        return key[len(self.prefix) + 1 :].split("/")


async def _get_tree(kv: KVClient, key: str) -> list[Node]:
    try:
        reply = await kv.get(key, recursive=True, sort=True, quorum=True)
    except KeyNotFound:
        return []
    return reply.node.leaves() if reply.node.dir else [reply.node]


def machines_from_nodes(keys: Keys, nodes: Sequence[Node]) -> dict[str, MachineState]:
    """Live machines (those with an object key), metadata overrides merged in."""
    found: dict[str, MachineState] = {}
    overrides: dict[str, dict[str, str]] = {}
    for node in nodes:
        parts = keys.split(node.key)
        if len(parts) == 3 and parts[0] == "machines" and parts[2] == "object":
            try:
                found[parts[1]] = MachineState.from_json(node.value or "{}")
            except (ValueError, AttributeError):
                continue
        elif len(parts) == 4 and parts[2] == "metadata":
            overrides.setdefault(parts[1], {})[parts[3]] = node.value or ""
    for machine_id, extra in overrides.items():
        if machine_id in found:
            for key, value in extra.items():
                if value:
                    found[machine_id].metadata[key] = value
                else:
                    found[machine_id].metadata.pop(key, None)
    return found


class Registry:
    """The API's view of the store: units, their states and machines."""

    def __init__(self, kv: KVClient, prefix: str = DEFAULT_PREFIX) -> None:
        self.kv = kv
        self.keys = Keys(prefix)
        self._unit_cache: dict[str, list[UnitOption]] = {}

    async def unit_options(self, unit_hash: str) -> list[UnitOption] | None:
        """Unit file contents by hash; content-addressed, so cached for good."""
        cached = self._unit_cache.get(unit_hash)
        if cached is not None:
            return cached
        try:
            reply = await self.kv.get(self.keys.unit(unit_hash))
        except KeyNotFound:
            return None
        raw = json.loads(reply.node.value or "{}").get("Raw", "")
        options = model.parse_unit_file(raw)
        self._unit_cache[unit_hash] = options
        return options

    async def prefetch_unit_files(self, hashes: set[str]) -> None:
        """Caches the files of ``hashes``: one read of the whole ``unit/`` directory when
        many are missing (a burst of submissions), one read per file otherwise."""
        missing = hashes - set(self._unit_cache)
        if len(missing) <= BULK_READ_THRESHOLD:
            await self.gather_limited([self.unit_options(h) for h in sorted(missing)])
            return
        for node in await _get_tree(self.kv, f"{self.keys.prefix}/unit"):
            unit_hash = node.key.rsplit("/", 1)[-1]
            if unit_hash in missing:
                try:
                    raw = json.loads(node.value or "{}").get("Raw", "")
                    self._unit_cache[unit_hash] = model.parse_unit_file(raw)
                except (ValueError, AttributeError, model.UnitError):
                    continue  # a damaged file: the job using it stays unschedulable

    def remember_unit_file(self, unit_hash: str, raw: str) -> bool:
        """Caches a unit file that came with an assignment, if it really has that hash."""
        try:
            options = model.parse_unit_file(raw)
        except model.UnitError:
            return False
        if model.unit_hash(options) != unit_hash:
            return False
        self._unit_cache[unit_hash] = options
        return True

    async def store_unit_file(self, options: Sequence[UnitOption]) -> str:
        unit_hash = model.unit_hash(options)
        raw = json.dumps({"Raw": model.serialize_options(options)})
        # Written every time (not create-if-absent): the new modifiedIndex tells the
        # engine's unit-file collection that this file is in use again.
        await self.kv.set(self.keys.unit(unit_hash), raw)
        self._unit_cache[unit_hash] = list(options)
        return unit_hash

    async def create_unit(self, name: str, options: Sequence[UnitOption],
                          desired_state: str) -> None:
        """Write (or rewrite, for ``--replace``) a unit: file first, then job, then state."""
        unit_hash = await self.store_unit_file(options)
        job = json.dumps({"Name": name, "UnitHash": hash_to_ints(unit_hash)})
        await self.kv.set(self.keys.job(name, "object"), job)
        await self.kv.set(self.keys.job(name, "target-state"), desired_state)

    async def set_target_state(self, name: str, state: str) -> None:
        await self.kv.set(self.keys.job(name, "target-state"), state)

    async def destroy_unit(self, name: str) -> bool:
        try:
            await self.kv.delete(self.keys.job(name), recursive=True)
        except KeyNotFound:
            return False
        return True

    async def _jobs(self, name: str | None = None) -> dict[str, dict[str, str]]:
        base = self.keys.job(name) if name else self.keys.job_dir()
        jobs: dict[str, dict[str, str]] = {}
        for node in await _get_tree(self.kv, base):
            parts = self.keys.split(node.key)
            if len(parts) == 3 and parts[0] == "job":
                jobs.setdefault(parts[1], {})[parts[2]] = node.value or ""
        return jobs

    async def _has_state(self, name: str, machine: str) -> bool:
        try:
            await self.kv.get(self.keys.state(name, machine))
        except KeyNotFound:
            return False
        return True

    async def get_unit(self, name: str) -> UnitRecord | None:
        fields = (await self._jobs(name)).get(name, {})
        if "object" not in fields:
            return None
        target = fields.get("target", "")
        states = {(name, target)} if target and await self._has_state(name, target) else set()
        return await self._record_fast(name, fields, states)

    async def list_units(self) -> list[UnitRecord]:
        jobs = await self._jobs()
        states = {(s.name, s.machine_id) for s in await self.unit_states()}
        missing = {
            ints_to_hash(json.loads(f["object"]).get("UnitHash"))
            for f in jobs.values() if "object" in f
        } - set(self._unit_cache)
        if len(missing) > BULK_READ_THRESHOLD:
            await self.prefetch_unit_files(missing)
        records = []
        for name in sorted(jobs):
            fields = jobs[name]
            if "object" not in fields:
                continue
            record = await self._record_fast(name, fields, states)
            if record is not None:
                if record.is_global:
                    # fleet lists every unit through its schedule, where a global unit,
                    # never scheduled, is "inactive" (GET of the one unit shows none)
                    record.current_state = "inactive"
                records.append(record)
        return records

    async def _record_fast(self, name: str, fields: dict[str, str],
                           states: set[tuple[str, str]]) -> UnitRecord | None:
        try:
            unit_hash = ints_to_hash(json.loads(fields["object"]).get("UnitHash"))
        except ValueError:
            return None
        options = await self.unit_options(unit_hash) or []
        try:
            is_global = model.requirements(name, options).is_global
        except model.UnitError:
            is_global = False
        desired = fields.get("target-state", "inactive") or "inactive"
        record = UnitRecord(name, options, unit_hash, desired, is_global=is_global)
        if not is_global:
            target = fields.get("target", "")
            record.machine_id = target
            record.current_state = "inactive"
            if target and (name, target) in states:
                record.current_state = "loaded"
                if fields.get("job-state") == target:
                    record.current_state = "launched"
        return record

    async def unit_states(self, machine: str | None = None,
                          unit: str | None = None) -> list[UnitStateRecord]:
        records = []
        base = self.keys.state(unit) if unit else self.keys.states_dir()
        for node in await _get_tree(self.kv, base):
            parts = self.keys.split(node.key)
            if len(parts) != 3:
                continue
            try:
                data = json.loads(node.value or "{}")
            except ValueError:
                continue
            record = UnitStateRecord(
                name=parts[1], unit_hash=str(data.get("unitHash", "")), machine_id=parts[2],
                load_state=str(data.get("loadState", "")),
                active_state=str(data.get("activeState", "")),
                sub_state=str(data.get("subState", "")),
            )
            if (machine and record.machine_id != machine) or (unit and record.name != unit):
                continue
            records.append(record)
        return sorted(records, key=lambda r: (r.name, r.machine_id))

    async def machines(self) -> list[MachineState]:
        nodes = await _get_tree(self.kv, self.keys.machines_dir())
        found = machines_from_nodes(self.keys, nodes)
        return [found[m] for m in sorted(found)]

    async def set_machine_metadata(self, machine: str, key: str, value: str | None) -> None:
        """PATCH /machines: ``None`` removes (stored as "" so the removal outlives restarts)."""
        await self.kv.set(self.keys.machine_metadata(machine, key), value or "")

    async def gather_limited(self, coroutines: Sequence, limit: int = 32) -> list:
        semaphore = asyncio.Semaphore(limit)

        async def bounded(coroutine):
            async with semaphore:
                return await coroutine

        return await asyncio.gather(*(bounded(c) for c in coroutines), return_exceptions=True)
