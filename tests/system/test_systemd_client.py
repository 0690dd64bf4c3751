"""The systemd client against the real systemd, logind and hostnamed of a test machine.

The client runs on the host and talks to the machine's system bus through its socket, as
root, exactly as a daemon inside the machine would.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from flotilla.daemons.systemd import (
    Hostnamed,
    JobFailed,
    JobTimeout,
    Logind,
    NoSuchUnit,
    Systemd,
    UnitMasked,
    exec_start,
)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def _systemd(machine) -> Systemd:
    return await Systemd.connect(machine.bus_address())


def _unit(machine, name: str, body: str) -> None:
    machine.write_file(f"/etc/systemd/system/{name}", body)


ONESHOT_OK = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
ONESHOT_FAIL = "[Service]\nType=oneshot\nExecStart=/bin/false\n"
SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"
SLOW_START = "[Service]\nType=oneshot\nExecStart=/bin/sleep 30\n"
INSTALLABLE = "[Service]\nExecStart=/bin/sleep 600\n\n[Install]\nWantedBy=multi-user.target\n"


def test_start_unit_waits_for_job_and_reports_active(machine):
    _unit(machine, "flt-ok.service", ONESHOT_OK)

    async def scenario():
        systemd = await _systemd(machine)
        try:
            await systemd.daemon_reload()
            result = await systemd.start_unit("flt-ok.service")
            status = await systemd.unit_status("flt-ok.service")
            return result, status
        finally:
            await systemd.close()

    result, status = run(scenario())
    assert result == "done"
    assert (status.load_state, status.active_state, status.sub_state) == (
        "loaded", "active", "exited"
    )
    assert machine.run(["systemctl", "is-active", "flt-ok.service"]).stdout.strip() == "active"


def test_failed_start_raises_job_failed_naming_the_unit(machine):
    _unit(machine, "flt-bad.service", ONESHOT_FAIL)

    async def scenario():
        systemd = await _systemd(machine)
        try:
            await systemd.daemon_reload()
            with pytest.raises(JobFailed) as caught:
                await systemd.start_unit("flt-bad.service")
            return caught.value, await systemd.unit_status("flt-bad.service")
        finally:
            await systemd.close()

    error, status = run(scenario())
    assert error.unit == "flt-bad.service"
    assert error.result == "failed"
    assert "flt-bad.service" in str(error)
    assert status.active_state == "failed"


def test_missing_unit_raises_no_such_unit(machine):
    async def scenario():
        systemd = await _systemd(machine)
        try:
            with pytest.raises(NoSuchUnit) as caught:
                await systemd.start_unit("flt-does-not-exist.service")
            return caught.value
        finally:
            await systemd.close()

    error = run(scenario())
    assert error.unit == "flt-does-not-exist.service"
    assert error.dbus_error == "org.freedesktop.systemd1.NoSuchUnit"


def test_job_timeout_is_reported(machine):
    _unit(machine, "flt-slow.service", SLOW_START)

    async def scenario():
        systemd = await _systemd(machine)
        try:
            await systemd.daemon_reload()
            with pytest.raises(JobTimeout) as caught:
                await systemd.start_unit("flt-slow.service", timeout=0.5)
            await systemd.stop_unit("flt-slow.service")
            return caught.value
        finally:
            await systemd.close()

    error = run(scenario())
    assert error.unit == "flt-slow.service"


def test_state_change_is_observed_by_subscription(machine):
    """A stop done by someone else (systemctl inside the machine) reaches the watcher."""
    _unit(machine, "flt-sleeper.service", SLEEPER)

    async def scenario():
        systemd = await _systemd(machine)
        seen = []
        try:
            await systemd.daemon_reload()
            async with systemd.watch_units(["flt-sleeper.service"]) as watch:
                first = await watch.next(timeout=10)
                seen.append(first)
                await systemd.start_unit("flt-sleeper.service")
                running = await watch.wait_for(
                    "flt-sleeper.service", lambda s: s.sub_state == "running", timeout=10
                )
                seen.append(running)
                await asyncio.to_thread(
                    machine.run, ["systemctl", "stop", "flt-sleeper.service"]
                )
                stopped = await watch.wait_for(
                    "flt-sleeper.service", lambda s: s.active_state == "inactive", timeout=10
                )
                seen.append(stopped)
            return seen
        finally:
            await systemd.close()

    first, running, stopped = run(scenario())
    assert first.active_state == "inactive"
    assert (running.active_state, running.sub_state) == ("active", "running")
    assert (stopped.active_state, stopped.sub_state) == ("inactive", "dead")


def test_transient_unit_runs_and_its_failure_is_seen(machine):
    async def scenario():
        systemd = await _systemd(machine)
        try:
            ok = await systemd.start_transient_unit(
                "flt-transient-ok.service",
                [
                    ("Description", "s", "transient check"),
                    ("Type", "s", "oneshot"),
                    exec_start(["/bin/sh", "-c", "echo transient > /run/flt-transient"]),
                ],
            )
            with pytest.raises(JobFailed) as caught:
                await systemd.start_transient_unit(
                    "flt-transient-bad.service",
                    [("Type", "s", "oneshot"), exec_start(["/bin/false"])],
                )
            return ok, caught.value
        finally:
            await systemd.close()

    ok, failure = run(scenario())
    assert ok == "done"
    assert machine.run(["cat", "/run/flt-transient"]).stdout == "transient\n"
    assert failure.unit == "flt-transient-bad.service"
    assert failure.result == "failed"


def test_enable_disable_mask_and_link(machine):
    # A vendor unit (as a package installs it), so a mask in /etc can shadow it.
    machine.write_file("/usr/lib/systemd/system/flt-install.service", INSTALLABLE)
    machine.write_file("/run/flt-linked/flt-linked.service", ONESHOT_OK)

    async def scenario():
        systemd = await _systemd(machine)
        try:
            await systemd.daemon_reload()
            enabled = await systemd.enable_unit_files(["flt-install.service"])
            state_enabled = await systemd.unit_file_state("flt-install.service")
            await systemd.disable_unit_files(["flt-install.service"])
            state_disabled = await systemd.unit_file_state("flt-install.service")
            await systemd.mask_unit_files(["flt-install.service"])
            await systemd.daemon_reload()
            with pytest.raises(UnitMasked):
                await systemd.start_unit("flt-install.service")
            await systemd.unmask_unit_files(["flt-install.service"])
            linked = await systemd.link_unit_files(["/run/flt-linked/flt-linked.service"])
            await systemd.daemon_reload()
            await systemd.start_unit("flt-linked.service")
            return enabled, state_enabled, state_disabled, linked
        finally:
            await systemd.close()

    enabled, state_enabled, state_disabled, linked = run(scenario())
    assert any(
        c.type == "symlink" and c.file.endswith("multi-user.target.wants/flt-install.service")
        for c in enabled
    )
    assert state_enabled == "enabled"
    assert state_disabled == "disabled"
    assert any(c.file.endswith("flt-linked.service") for c in linked)
    assert machine.run(["systemctl", "is-active", "flt-linked.service"]).stdout.strip() == "active"


INHIBITOR_SCRIPT = """
import asyncio, json, sys
from flotilla.daemons.systemd import Bus, Logind

async def main(address):
    bus = await Bus.connect(address)
    logind = Logind(bus)
    lock = await logind.inhibit("shutdown", "flotilla-test", "writing an update")
    held = [i for i in await logind.list_inhibitors() if i.who == "flotilla-test"]
    lock.release()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        left = [i for i in await logind.list_inhibitors() if i.who == "flotilla-test"]
        if not left or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    bus.disconnect()
    print(json.dumps({"held": [[i.what, i.why, i.mode] for i in held], "left": len(left)}))

asyncio.run(main(sys.argv[1]))
"""


def test_inhibitor_lock_lives_as_long_as_its_descriptor(machine):
    # logind identifies the lock holder by PID, so the client runs in the machine's PID
    # namespace (with the host's files), as a daemon inside the machine would.
    result = machine.run_host_program(
        [sys.executable, "-c", INHIBITOR_SCRIPT, machine.bus_address()]
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["held"] == [["shutdown", "writing an update", "block"]]
    assert outcome["left"] == 0, "releasing the descriptor must drop the lock"


def test_set_static_hostname(machine):
    async def scenario():
        hostnamed = await Hostnamed.connect(machine.bus_address())
        try:
            await hostnamed.set_static_hostname("flotilla-renamed")
            return await hostnamed.static_hostname()
        finally:
            await hostnamed.close()

    assert run(scenario()) == "flotilla-renamed"
    assert machine.run(["cat", "/etc/hostname"]).stdout.strip() == "flotilla-renamed"


def test_logind_reboot_reboots_the_machine(cluster_factory):
    victim = cluster_factory(1)[0]
    boot_id = victim.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout

    async def scenario():
        logind = await Logind.connect(victim.bus_address())
        try:
            assert await logind.can_reboot() in ("yes", "challenge")
            await logind.reboot()
        finally:
            await logind.close()

    run(scenario())
    # A container that reboots makes systemd-nspawn exit with status 133.
    assert victim.launcher.wait(timeout=60) == 133
    victim.restart()
    assert victim.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
        "running", "degraded"
    )
    new_boot_id = victim.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout
    assert new_boot_id != boot_id, "the machine came back from a new boot"
