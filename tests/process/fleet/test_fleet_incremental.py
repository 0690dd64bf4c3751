"""Watches are incremental: a change to one unit costs only its machine, never a re-read
by every machine (fleet's main scaling problem). Engine and agents run in-process against
real etcd so their store requests can be counted."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from flotilla.daemons.fleet.agent import Agent
from flotilla.daemons.fleet.engine import Engine
from flotilla.daemons.fleet.model import UnitOption, unit_hash
from flotilla.daemons.fleet.registry import MachineState, Registry
from flotilla.daemons.fleet.standin import StandInSystemd
from flotilla.daemons.kvclient import KVClient

from .harness import Etcd

MACHINES = 10
UNITS = 40


async def until(condition, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
def test_one_unit_change_touches_only_its_machine(etcd: Etcd) -> None:
    async def body() -> None:
        prefix = "/incremental_test/"
        workdir = Path(tempfile.mkdtemp(prefix="fleet-incr-"))
        engine_kv = KVClient([etcd.url])
        engine = Engine(Registry(engine_kv, prefix), "engine", interval=0.5)
        agents: list[Agent] = []
        for i in range(MACHINES):
            machine = MachineState(id=f"m{i:02d}" + "0" * 29)
            agents.append(Agent(Registry(KVClient([etcd.url]), prefix), StandInSystemd(),
                                machine, units_dir=workdir / str(i), ttl=30))
        submit = Registry(KVClient([etcd.url]), prefix)
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
            await asyncio.sleep(0.5)  # state writes settle
            counts = [a.kv.request_count for a in agents]
            per_unit = sum(counts) / UNITS
            assert per_unit <= 6, per_unit  # watch event, unit file, job-state, state, ...
            assert all(a.mirror.relists == 1 for a in agents)

            owner = next(a for a in agents if "u7.service" in a.current)
            await submit.set_target_state("u7.service", "loaded")
            await until(lambda: "u7.service" not in owner.systemd.active, 10,  # type: ignore[attr-defined]
                        "u7 stopped")
            await asyncio.sleep(0.3)
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

    asyncio.run(body())


@pytest.mark.timeout(30)
def test_engine_collects_unit_files_no_job_uses(etcd: Etcd) -> None:
    async def body() -> None:
        prefix = "/gc_test/"
        kv = KVClient([etcd.url])
        registry = Registry(kv, prefix)
        engine = Engine(Registry(KVClient([etcd.url]), prefix), "engine", interval=0.2)
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
