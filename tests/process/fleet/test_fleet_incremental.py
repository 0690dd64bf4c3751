"""Watches are incremental: a change to one unit costs only its machine, never a re-read
by every machine (fleet's main scaling problem). Engine and agents run in-process against
a real store (kvd and etcd) so their store requests can be counted."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from flotilla.daemons.fleet.agent import Agent
from flotilla.daemons.fleet.engine import Engine
from flotilla.daemons.fleet.model import UnitOption, unit_hash
from flotilla.daemons.fleet.registry import MachineState, Registry
from flotilla.daemons.fleet.standin import StandInSystemd
from flotilla.daemons.kvclient import KVClient

from .harness import Store, on_every_store

MACHINES = 10
UNITS = 40
#: long enough that no heartbeat (every ttl/2) or state refresh (every ttl*4/5) falls
#: inside the test and is counted as a request the change caused
AGENT_TTL = 60


async def until(condition, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def idle(agent: Agent) -> bool:
    """The agent has acted on everything its stream delivered and has nothing in flight.

    The reconcile loop clears its wake-up flag and takes its lock with no await in
    between, so with neither set no reconcile is running or due; nothing left to
    publish means the state writes are done too.
    """
    return (not agent._wake.is_set() and not agent._lock.locked()
            and not agent._dirty and not agent._publish.is_set())


async def agents_caught_up(submit: Registry, agents: list[Agent]) -> None:
    """Waits until every agent has read its stream past a marker written now, and acted.

    The marker is an assignment that asks for nothing (an unknown unit, inactive), so
    the agent's reconcile makes no request for it; the stream delivers events in index
    order, so an agent that has seen the marker has seen every earlier change to its
    assignments, and once idle it has made every request those changes called for.
    """
    indexes = {}
    for agent in agents:
        reply = await submit.kv.set(
            submit.keys.assignments(agent.machine.id, "marker.service"),
            json.dumps({"UnitHash": "0" * 40, "TargetState": "inactive"}))
        indexes[agent.machine.id] = reply.node.modified_index
    await until(lambda: all(a.mirror.index >= indexes[a.machine.id] and idle(a)
                            for a in agents), 10, "every agent past its marker")


@on_every_store
@pytest.mark.timeout(60)
def test_one_unit_change_touches_only_its_machine(store: Store) -> None:
    async def body() -> None:
        prefix = "/incremental_test/"
        workdir = Path(tempfile.mkdtemp(prefix="fleet-incr-"))
        engine_kv = KVClient([store.url])
        engine = Engine(Registry(engine_kv, prefix), "engine", interval=0.5)
        agents: list[Agent] = []
        for i in range(MACHINES):
            machine = MachineState(id=f"m{i:02d}" + "0" * 29)
            agents.append(Agent(Registry(KVClient([store.url]), prefix), StandInSystemd(),
                                machine, units_dir=workdir / str(i), ttl=AGENT_TTL))
        submit = Registry(KVClient([store.url]), prefix)
        engine_task = asyncio.create_task(engine.run())
        try:
            await asyncio.gather(*(a.start() for a in agents))
            for i in range(UNITS):
                await submit.create_unit(
                    f"u{i}.service", [UnitOption("Service", "ExecStart", f"/bin/x {i}")],
                    "launched")

            def launched() -> int:
                return sum(len(a.systemd.active) for a in agents)  # type: ignore[attr-defined]

            await until(lambda: launched() == UNITS, 20, "all units launched")
            assert all(len(a.systemd.active) == UNITS // MACHINES for a in agents)  # type: ignore[attr-defined]

            async def launch_written() -> bool:
                """Every unit's job-state and its state as started: the last writes."""
                jobs = (await submit.kv.get(submit.keys.job_dir(), recursive=True)).node
                states = (await submit.kv.get(submit.keys.states_dir(),
                                              recursive=True)).node
                job_states = [n for n in jobs.leaves() if n.key.endswith("/job-state")]
                started = [n for n in states.leaves()
                           if json.loads(n.value or "{}").get("activeState") == "active"]
                return len(job_states) == len(started) == UNITS

            deadline = asyncio.get_running_loop().time() + 10
            while not await launch_written():
                assert asyncio.get_running_loop().time() < deadline, "launch writes"
                await asyncio.sleep(0.05)
            await until(lambda: all(idle(a) for a in agents), 10, "agents idle")
            counts = [a.kv.request_count for a in agents]
            per_unit = sum(counts) / UNITS
            assert per_unit <= 6, per_unit  # watch event, unit file, job-state, state, ...
            assert all(a.mirror.relists == 1 for a in agents)

            owner = next(a for a in agents if "u7.service" in a.current)
            others = [a for a in agents if a is not owner]
            await submit.set_target_state("u7.service", "loaded")
            await until(lambda: "u7.service" not in owner.systemd.active, 10,  # type: ignore[attr-defined]
                        "u7 stopped")
            # Witnesses that the change has run its course: the engine has placed a
            # unit submitted after it (so it wrote everything the change called for
            # before), and every other agent has read its stream past that point.
            await submit.create_unit(
                "witness.service", [UnitOption("Service", "ExecStart", "/bin/witness"),
                                    UnitOption("X-Fleet", "MachineID", owner.machine.id)],
                "launched")
            await until(lambda: "witness.service" in owner.systemd.active, 10,  # type: ignore[attr-defined]
                        "the witness started on u7's machine")
            before_markers = [a.kv.request_count for a in agents]
            await agents_caught_up(submit, others)
            assert [a.kv.request_count for a in agents] == before_markers  # markers are free
            delta = {a.machine.id: a.kv.request_count - c for a, c in zip(agents, counts,
                                                                           strict=True)}
            assert delta.pop(owner.machine.id) > 0
            assert set(delta.values()) == {0}, delta  # no other machine read anything
        finally:
            engine_task.cancel()
            await asyncio.gather(engine_task, return_exceptions=True)
            for agent in agents:
                await agent.stop(purge=False)
                await agent.kv.close()
            await engine.release()
            await engine_kv.close()
            await submit.kv.close()
            shutil.rmtree(workdir, ignore_errors=True)

    asyncio.run(body())


@pytest.mark.timeout(30)
def test_engine_collects_unit_files_no_job_uses(store: Store) -> None:
    async def body() -> None:
        prefix = "/gc_test/"
        kv = KVClient([store.url])
        registry = Registry(kv, prefix)
        engine = Engine(Registry(KVClient([store.url]), prefix), "engine", interval=0.2)
        task = asyncio.create_task(engine.run())
        try:
            old = [UnitOption("Service", "ExecStart", "/bin/old")]
            new = [UnitOption("Service", "ExecStart", "/bin/new")]
            await registry.create_unit("a.service", old, "inactive")
            await registry.create_unit("a.service", new, "inactive")  # --replace
            await registry.create_unit("b.service", old, "inactive")
            await registry.destroy_unit("b.service")
            # Only the final state counts: a.service on its new file, b.service gone.
            await until(lambda: engine._referenced == {unit_hash(new)}, 10,
                        "engine to see the jobs as they ended")
            assert await engine.collect_unit_files(now=1000.0) == []
            assert await engine.collect_unit_files(now=1061.0) == [unit_hash(old)]
            assert await registry.unit_options(unit_hash(new)) == new
            registry._unit_cache.clear()
            assert await registry.unit_options(unit_hash(old)) is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.release()
            await engine.kv.close()
            await kv.close()

    asyncio.run(body())
