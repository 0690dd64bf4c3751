"""locksmithd on a private bus against kvd: from the need-reboot signal to logind's Reboot.

Real: the store (kvd), dbus-daemon, locksmithd's D-Bus client and signal match, the
signal sent by our ``locksmithctl send-need-reboot``, sd_notify over a datagram socket.
Stand-ins (tests/process/locksmith/fake_services.py): logind, which records the Reboot
call instead of rebooting this host, and update-engine's GetStatus answer. What is not
covered here: the reboot itself and the release after a real boot (that needs booted
machines), and the 5-minute delay when users are logged in (no utmp in the test root).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from tests.conditions import wait_until
from tests.process.fleet.harness import Store

from .harness import PrivateBus, ctl, start_fakes, start_locksmithd

PREFIX = "/coreos.com/updateengine/rebootlock"


def semaphore(store: Store, group: str) -> str | None:
    node = store.get(quote(f"{PREFIX}/groups/{group}/semaphore"))
    return None if node is None else node["node"]["value"]


def put(store: Store, key: str, value: str) -> None:
    body = urllib.parse.urlencode({"value": value}).encode()
    request = urllib.request.Request(f"{store.url}/v2/keys{quote(key)}", data=body,
                                     method="PUT")
    urllib.request.urlopen(request, timeout=5).read()


def reboots(fakes) -> list[dict]:
    return [c for c in fakes.calls() if c["call"] == "Reboot"]


def test_etcd_lock_releases_at_start_then_locks_and_reboots_on_the_signal(
        kvd_store: Store, bus: PrivateBus, tmp_path: Path) -> None:
    group = f"d-{uuid.uuid4().hex[:8]}"
    # its own slot from before the "reboot": locksmithd must find it and give it back
    me = uuid.uuid4().hex
    assert ctl("-endpoint", kvd_store.url, "-group", group, "lock", me).returncode == 0
    fakes = start_fakes(bus)
    daemon = start_locksmithd(bus, tmp_path, "-endpoint", kvd_store.url, "-group", group,
                              update_conf="REBOOT_STRATEGY=etcd-lock\n", machine_id=me)
    try:
        wait_until(lambda: "READY=1" in daemon.notifications(), 30, "READY=1 from locksmithd")
        wait_until(lambda: semaphore(kvd_store, group) == '{"semaphore":1,"max":1,"holders":[]}',
                   30, "locksmithd to release the slot it held", interval=0.2)
        assert any(c["call"] == "GetStatus" for c in fakes.calls())
        assert reboots(fakes) == []
        coordinator = tmp_path / "run/update-engine/coordinator.conf"
        assert coordinator.read_text() == \
            "NAME=locksmithd\nSTRATEGY=etcd-lock\nSTATE=running\n"

        # another machine holds the only slot: the signal makes it try, and wait
        assert ctl("-endpoint", kvd_store.url, "-group", group, "lock", "other").returncode == 0
        sent = ctl("send-need-reboot", DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")
        wait_until(lambda: "Failed to acquire lock: semaphore is at 0" in daemon.log(), 30,
                   "a refused lock attempt")
        assert reboots(fakes) == []

        # the slot comes free: it takes it, records a renewal, broadcasts, reboots
        assert ctl("-endpoint", kvd_store.url, "-group", group, "unlock", "other").returncode == 0
        wait_until(lambda: reboots(fakes), 30, "logind's Reboot to be called", interval=0.2)
        assert reboots(fakes) == [{"call": "Reboot", "args": [False]}]
        assert semaphore(kvd_store, group) == \
            f'{{"semaphore":0,"max":1,"holders":["{me}"]}}'
        renewal = kvd_store.get(f"{PREFIX}/groups/{group}/flotilla-renewals/{me}")
        assert renewal is not None
        assert json.loads(renewal["node"]["value"])["holder"] == me
        assert "broadcast 'System reboot in 5 minutes!' to 0 terminal(s)" in daemon.log()
        assert daemon.proc.poll() is None  # it waits to be stopped by the shutdown
        assert coordinator.read_text().endswith("STATE=rebooting\n")
    finally:
        code = daemon.stop()
        fakes.stop()
    assert code == 0


def test_reboot_strategy_acts_on_getstatus_at_start_and_retries_a_refused_reboot(
        bus: PrivateBus, tmp_path: Path) -> None:
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT", refuse_reboots=1)
    # no store at all: the reboot strategy never needs one
    daemon = start_locksmithd(bus, tmp_path, "-endpoint", "http://127.0.0.1:1",
                              REBOOT_STRATEGY="reboot")
    try:
        wait_until(lambda: len(reboots(fakes)) >= 2, 40,
                   "a second Reboot call after the inhibited one", interval=0.2)
        assert "logind refused the reboot" in daemon.log()
    finally:
        daemon.stop()
        fakes.stop()


def test_outside_the_window_it_neither_locks_nor_reboots(kvd_store: Store, bus: PrivateBus,
                                                         tmp_path: Path) -> None:
    group = f"w-{uuid.uuid4().hex[:8]}"
    start = (datetime.now() + timedelta(hours=3)).strftime("%H:%M")
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT")
    daemon = start_locksmithd(
        bus, tmp_path, "-endpoint", kvd_store.url, "-group", group,
        update_conf=f"REBOOT_STRATEGY=etcd-lock\nREBOOT_WINDOW_START={start}\n"
                    "REBOOT_WINDOW_LENGTH=1h\n")
    try:
        wait_until(lambda: "for the reboot window" in daemon.log(), 30,
                   "locksmithd to wait for the window")
        status = [n for n in daemon.notifications() if n.startswith("STATUS=waiting")]
        assert status, daemon.notes
        seconds = float(status[-1].split()[1].rstrip("s"))
        assert 2 * 3600 <= seconds <= 3 * 3600 + 60
        assert semaphore(kvd_store, group) in (None, '{"semaphore":1,"max":1,"holders":[]}',
                                               '{"semaphore":1,"max":1,"holders":null}')
        assert reboots(fakes) == []
    finally:
        code = daemon.stop()
        fakes.stop()
    assert code == 0


def test_a_stale_holder_is_reclaimed_only_when_configured(kvd_store: Store, bus: PrivateBus,
                                                          tmp_path: Path) -> None:
    group = f"r-{uuid.uuid4().hex[:8]}"
    base = ("-endpoint", kvd_store.url, "-group", group)
    assert ctl(*base, "set-max", "2").returncode == 0
    assert ctl(*base, "lock", "dead").returncode == 0      # renewed long ago, then died
    assert ctl(*base, "lock", "pinned").returncode == 0    # locked by hand: no record
    put(kvd_store, f"{PREFIX}/groups/{group}/flotilla-renewals/dead",
        json.dumps({"holder": "dead", "renewed": time.time() - 7200}))
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT")
    daemon = start_locksmithd(bus, tmp_path, *base, "-reclaim-after", "1h",
                              REBOOT_STRATEGY="etcd-lock")
    try:
        wait_until(lambda: reboots(fakes), 40, "the reboot after reclaiming", interval=0.2)
        value = json.loads(semaphore(kvd_store, group) or "{}")
        assert value == {"semaphore": 0, "max": 2,
                         "holders": sorted(["pinned", daemon.machine_id])}
        assert "reclaimed the reboot slot of dead" in daemon.log()
        assert kvd_store.get(f"{PREFIX}/groups/{group}/flotilla-renewals/dead") is None
    finally:
        daemon.stop()
        fakes.stop()


def test_without_reclaim_a_stale_holder_keeps_its_slot(kvd_store: Store, bus: PrivateBus,
                                                       tmp_path: Path) -> None:
    group = f"n-{uuid.uuid4().hex[:8]}"
    base = ("-endpoint", kvd_store.url, "-group", group)
    assert ctl(*base, "lock", "dead").returncode == 0
    put(kvd_store, f"{PREFIX}/groups/{group}/flotilla-renewals/dead",
        json.dumps({"holder": "dead", "renewed": time.time() - 7200}))
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT")
    daemon = start_locksmithd(bus, tmp_path, *base, REBOOT_STRATEGY="etcd-lock")
    try:
        wait_until(lambda: "Failed to acquire lock: semaphore is at 0" in daemon.log(), 30,
                   "a refused lock attempt")
        assert semaphore(kvd_store, group) == '{"semaphore":0,"max":1,"holders":["dead"]}'
        assert reboots(fakes) == []
        # the operator frees it by hand, and is told how stale the holder was
        run = ctl(*base, "unlock", "dead")
        assert run.returncode == 0
        assert run.stderr.startswith("Warning: dead renewed its reboot slot 7")
        assert run.stderr.endswith("s ago and may still be rebooting; its slot is free now.\n")
        wait_until(lambda: reboots(fakes), 30, "the reboot once the slot is free", interval=0.2)
    finally:
        daemon.stop()
        fakes.stop()


def test_strategy_off_exits_at_once_and_bad_settings_exit_1(bus: PrivateBus,
                                                            tmp_path: Path) -> None:
    off = start_locksmithd(bus, tmp_path / "off", REBOOT_STRATEGY="off")
    assert off.proc.wait(30) == 0
    assert 'Reboot strategy is "off"' in off.log()
    off.stop()
    bad = start_locksmithd(bus, tmp_path / "bad", update_conf="REBOOT_WINDOW_START=04:00\n")
    assert bad.proc.wait(30) == 1
    assert "Either both or neither" in bad.log()
    bad.stop()


def test_locksmithctl_reboot_locks_then_asks_logind_and_may_run_again(
        kvd_store: Store, bus: PrivateBus) -> None:
    """locksmith#58: a machine that already holds the lock can still reboot."""
    group = f"c-{uuid.uuid4().hex[:8]}"
    me = Path("/etc/machine-id").read_text().strip()
    fakes = start_fakes(bus)
    try:
        for _ in range(2):
            run = ctl("-endpoint", kvd_store.url, "-group", group, "reboot",
                      DBUS_SYSTEM_BUS_ADDRESS=bus.address)
            assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
        assert reboots(fakes) == [{"call": "Reboot", "args": [False]}] * 2
        assert semaphore(kvd_store, group) == f'{{"semaphore":0,"max":1,"holders":["{me}"]}}'
        run = ctl("-endpoint", "http://127.0.0.1:1", "reboot",
                  DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        assert run.returncode == 1
        assert run.stderr.startswith("Error initializing etcd client: ")
    finally:
        fakes.stop()


def test_best_effort_without_a_store_unit_reboots_without_a_lock(bus: PrivateBus,
                                                                  tmp_path: Path) -> None:
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT")
    daemon = start_locksmithd(bus, tmp_path, "-endpoint", "http://127.0.0.1:1",
                              REBOOT_STRATEGY="best-effort")
    try:
        wait_until(lambda: reboots(fakes), 30, "the reboot", interval=0.2)
        assert "strategy best-effort acts as reboot here" in daemon.log()
    finally:
        daemon.stop()
        fakes.stop()
