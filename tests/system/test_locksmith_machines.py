"""locksmithd in 5 booted machines, from the installed .deb: a rolling reboot with max=2.

The store is one kvd on the host, on the machines' bridge (a 5-member kvd cluster inside
machines that reboot would make the store itself the thing under test; one member keeps
the history readable from the host the whole time). Every machine runs locksmithd
(``etcd-lock``) under its own systemd, with a drain unit that records each run; each gets
"reboot needed" from ``locksmithctl send-need-reboot``, locks, drains, reboots through its
logind (nspawn exits 133 and the harness boots it again, as a host's nspawn unit would),
and after the boot gives its slot back.

The proof is the store's own history of the semaphore key: every version after the test
started, read back through v2 watches (``waitIndex``), must have at most 2 holders, and
every machine must appear in it and be gone at the end. Then: a drain unit that fails
means no reboot and the slot is given back; with a window that is closed now, nobody
locks or reboots (observed until every daemon has said it is waiting, plus a margin);
a holder killed while it drains (it renews every 10 s until then) is reclaimed by a
machine configured with ``LOCKSMITHD_RECLAIM_AFTER``, which then reboots and releases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from flotilla.daemons.kvclient import KVClient
from flotilla.daemons.locksmith.semaphore import Semaphore, decode

from tests.conditions import wait_until
from tests.machines import Cluster, Machine
from tests.packages import built_packages
from tests.process.fleet.harness import Store

pytestmark = pytest.mark.system

MAX = 2
KEY = "/coreos.com/updateengine/rebootlock/semaphore"
ROLL_DEADLINE = 150.0     # the whole roll: 3 waves of reboots plus lock back-offs
DRAIN_LOG = "/var/lib/drain-test/runs"
DRAIN_UNIT = f"""[Unit]
Description=test drain hook: records that it ran before the reboot

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /var/lib/drain-test && date +%s >> {DRAIN_LOG}'
"""
HANGING_UNIT = """[Unit]
Description=test drain hook that never ends

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/bin/sleep infinity
"""
FAILING_UNIT = """[Unit]
Description=test drain hook that fails

[Service]
Type=oneshot
ExecStart=/bin/false
"""


@dataclass
class Rig:
    cluster: Cluster
    store: Store

    @property
    def machines(self) -> list[Machine]:
        return self.cluster.machines

    def ctl(self, machine: Machine, *args: str, check: bool = True):
        return machine.run(["locksmithctl", "-endpoint", self.store.url, *args], check=check)

    def semaphore(self) -> tuple[Semaphore, int]:
        reply = self.store.get(KEY)
        assert reply is not None
        return decode(reply["node"]["value"]), reply["node"]["modifiedIndex"]

    def history(self, after: int) -> list[tuple[int, Semaphore]]:
        """Every value the semaphore took after index ``after``, from the store's watch
        history, up to its current version."""
        _, until = self.semaphore()

        async def read() -> list[tuple[int, Semaphore]]:
            seen: list[tuple[int, Semaphore]] = []
            async with KVClient(self.store.url) as client:
                index = after + 1
                while index <= until:
                    event = await client.wait(KEY, wait_index=index)
                    seen.append((event.node.modified_index, decode(event.node.value or "")))
                    index = event.node.modified_index + 1
            return seen

        return asyncio.run(read())

    def configure(self, machine: Machine, extra: str = "") -> None:
        machine.write_file("/etc/coreos/update.conf",
                           f"REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT={self.store.url}\n"
                           + extra)
        started = machine.run(["systemctl", "restart", "locksmithd.service"], check=False)
        if started.returncode != 0:
            raise AssertionError(f"{machine.name}: locksmithd did not start: {started.stderr}"
                                 f"\n{self.journal(machine)[-3000:]}")

    def journal(self, machine: Machine) -> str:
        return machine.journal(lines=None, unit="locksmithd.service")


@pytest.fixture(scope="module")
def rig(cluster_factory) -> Iterator[Rig]:
    cluster = cluster_factory(5)
    assert cluster.bridge is not None
    store = Store("kvd", host=str(cluster.bridge.host_address)).start()
    try:
        deb = built_packages()["deb"]
        with ThreadPoolExecutor(max_workers=len(cluster.machines)) as pool:
            list(pool.map(lambda m: m.install_deb(deb), cluster.machines))
        rig = Rig(cluster, store)
        for machine in cluster.machines:
            machine.write_file("/etc/systemd/system/drain-test.service", DRAIN_UNIT)
            machine.write_file("/etc/systemd/system/drain-fail.service", FAILING_UNIT)
            machine.write_file("/etc/systemd/system/drain-hang.service", HANGING_UNIT)
            machine.run(["systemctl", "daemon-reload"])
            machine.run(["systemctl", "enable", "locksmithd.service"])
            rig.configure(machine, "LOCKSMITHD_DRAIN_UNITS=drain-test.service\n")
        yield rig
    finally:
        store.stop()


def drain_runs(machine: Machine) -> int:
    result = machine.run(["cat", DRAIN_LOG], check=False)
    return len(result.stdout.split()) if result.returncode == 0 else 0


def test_a_rolling_reboot_never_has_more_than_max_machines_down(rig: Rig) -> None:
    first = rig.machines[0]
    assert rig.ctl(first, "set-max", str(MAX)).stdout == f"Old-Max: 1\nMax: {MAX}\n"
    value, start = rig.semaphore()
    assert (value.semaphore, value.max, value.holder_list) == (MAX, MAX, ())
    boots = {m.name: m.boots for m in rig.machines}
    began = time.monotonic()
    for machine in rig.machines:
        machine.run(["locksmithctl", "send-need-reboot"])
    try:
        with ThreadPoolExecutor(max_workers=len(rig.machines)) as pool:
            states = list(pool.map(lambda m: m.follow_reboot(ROLL_DEADLINE), rig.machines))
    except Exception as err:
        logs = "\n".join(f"--- {m.name} ({m.machine_id}):\n{rig.journal(m)[-2500:]}"
                         for m in rig.machines if m.running)
        raise AssertionError(f"{err}\nsemaphore: {rig.semaphore()[0]}\n{logs}") from err
    assert all(state in ("running", "degraded") for state in states)
    wait_until(lambda: rig.semaphore()[0].holder_list == (), 60,
               "every machine to give its slot back after its boot", interval=0.3)
    took = time.monotonic() - began
    print(f"rolling reboot of {len(rig.machines)} machines with max={MAX}: {took:.1f}s")

    events = rig.history(start)
    ids = {m.machine_id for m in rig.machines}
    ever: set[str] = set()
    peak = 0
    for index, value in events:
        holders = set(value.holder_list)
        assert len(holders) <= MAX, f"index {index}: {value}"
        assert value.semaphore == MAX - len(holders), f"index {index}: {value}"
        assert holders <= ids, f"index {index}: a holder that is no test machine: {value}"
        ever |= holders
        peak = max(peak, len(holders))
    assert ever == ids, "every machine held a slot at some index"
    assert peak == MAX, "two machines rebooted at once at some point"
    assert events[-1][1].holder_list == ()
    # one lock and one unlock per machine, nothing else wrote the key
    assert len(events) == 2 * len(ids)
    for machine in rig.machines:
        assert machine.boots == boots[machine.name] + 1, f"{machine.name} booted once more"
        assert drain_runs(machine) == 1, f"{machine.name} drained exactly once"
        log = rig.journal(machine)
        assert "Unlocked existing lock for this machine" in log, machine.name


def test_a_failed_drain_means_no_reboot_and_the_slot_is_given_back(rig: Rig) -> None:
    machine = rig.machines[0]
    _, start = rig.semaphore()
    boots = machine.boots
    rig.configure(machine, "LOCKSMITHD_DRAIN_UNITS=drain-fail.service\n")
    try:
        machine.run(["locksmithctl", "send-need-reboot"])
        wait_until(lambda: "gave the reboot slot back after the failed drain"
                   in rig.journal(machine), 60, "the slot given back after the failed drain",
                   interval=0.3)
        log = rig.journal(machine)
        assert "not rebooting: drain unit drain-fail.service did not succeed (failed)" in log
    finally:
        machine.run(["systemctl", "stop", "locksmithd.service"])
    assert machine.running and machine.boots == boots, "the machine did not reboot"
    events = rig.history(start)
    held = [n for n, (_, value) in enumerate(events) if machine.machine_id in value.holder_list]
    assert held, "it took the slot before draining"
    # the first hold ends with a write that takes it out again (a retry after the
    # back-off may lock again before the daemon was stopped)
    assert any(machine.machine_id not in value.holder_list
               for _, value in events[held[0] + 1:]), "and gave it back"
    if machine.machine_id in rig.semaphore()[0].holder_list:
        rig.ctl(machine, "unlock")


def test_outside_the_window_nobody_locks_or_reboots(rig: Rig) -> None:
    _, start = rig.semaphore()
    boots = {m.name: m.boots for m in rig.machines}
    inside = rig.machines[0].run(["date", "+%Y-%m-%d %H:%M"]).stdout.strip()
    # a daily window opening 6 h from the machines' local now: closed for the whole test
    opens = (datetime.strptime(inside, "%Y-%m-%d %H:%M") + timedelta(hours=6)).strftime("%H:%M")
    window = (f"LOCKSMITHD_REBOOT_WINDOW_START={opens}\n"
              "LOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n")
    try:
        for machine in rig.machines:
            rig.configure(machine, window)
            machine.run(["locksmithctl", "send-need-reboot"])
        for machine in rig.machines:
            wait_until(lambda m=machine: "s for the reboot window" in rig.journal(m), 60,
                       f"{machine.name}'s locksmithd to wait for the window", interval=0.3)
        # the decision is made (wait until the window opens, hours away); give any stray
        # lock attempt a margin to show up before looking
        margin = time.monotonic() + 5.0
        wait_until(lambda: time.monotonic() >= margin, 10, "the observation margin")
        for machine in rig.machines:
            assert machine.running and machine.boots == boots[machine.name], machine.name
        assert rig.history(start) == [], "nobody wrote the semaphore"
    finally:
        for machine in rig.machines:
            machine.run(["systemctl", "stop", "locksmithd.service"], check=False)


def test_a_holder_killed_while_draining_is_reclaimed_as_configured(rig: Rig) -> None:
    holder, waiter = rig.machines[4], rig.machines[0]
    assert rig.ctl(waiter, "set-max", "1").returncode == 0
    _, start = rig.semaphore()
    rig.configure(holder, "LOCKSMITHD_DRAIN_UNITS=drain-hang.service\n"
                          "LOCKSMITHD_DRAIN_TIMEOUT=10m\n")
    holder.run(["locksmithctl", "send-need-reboot"])
    wait_until(lambda: "starting drain units drain-hang.service" in rig.journal(holder), 30,
               "the holder to lock and start draining", interval=0.2)
    assert rig.semaphore()[0].holder_list == (holder.machine_id,)
    rig.configure(waiter, "LOCKSMITHD_RECLAIM_AFTER=12s\n")
    waiter.run(["locksmithctl", "send-need-reboot"])
    wait_until(lambda: "Failed to acquire lock" in rig.journal(waiter), 30,
               "the waiter to find the slot taken", interval=0.2)
    holder.kill()   # power cut: it never renews or releases again
    waiter.follow_reboot(120)
    wait_until(lambda: rig.semaphore()[0].holder_list == (), 60,
               "the waiter to give its slot back after its boot", interval=0.3)
    log = rig.journal(waiter)
    assert (f"reclaimed the reboot slot of {holder.machine_id}: not renewed for more "
            "than 12s") in log
    events = rig.history(start)
    assert all(len(value.holder_list) <= 1 for _, value in events), events
    seen = [value.holder_list for _, value in events]
    assert (holder.machine_id,) in seen and (waiter.machine_id,) in seen
    # the holder left only by the reclaim, before the waiter took the slot
    gone = next(n for n, h in enumerate(seen) if n and h == () and seen[n - 1] == (
        holder.machine_id,))
    assert seen.index((waiter.machine_id,)) > gone
