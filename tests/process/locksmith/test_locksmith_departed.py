"""Holders whose machine has left fleet's machine list, against kvd and a private bus.

fleet lists live machines as ``/_coreos.com/fleet/machines/<id>/object`` (a TTL key its
agent renews); the keys are written here as fleetd would. This module has its own kvd, so
the fleet keys it writes do not reach the other locksmith tests.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

from tests.conditions import wait_until
from tests.process.fleet.harness import Store

from .harness import PrivateBus, ctl, start_fakes, start_locksmithd

PREFIX = "/coreos.com/updateengine/rebootlock"
FLEET = "/_coreos.com/fleet/machines"


def put(store: Store, key: str, value: str) -> None:
    body = urllib.parse.urlencode({"value": value}).encode()
    request = urllib.request.Request(f"{store.url}/v2/keys{quote(key)}", data=body,
                                     method="PUT")
    urllib.request.urlopen(request, timeout=5).read()


def semaphore(store: Store, group: str) -> dict:
    node = store.get(quote(f"{PREFIX}/groups/{group}/semaphore"))
    return json.loads(node["node"]["value"]) if node else {}


def fleet_machine(store: Store, machine: str) -> None:
    put(store, f"{FLEET}/{machine}/object",
        json.dumps({"ID": machine, "PublicIP": "127.0.0.1", "Metadata": {},
                    "Version": "1.0.0"}))


def test_status_and_unlock_warn_about_a_holder_fleet_no_longer_lists(kvd_store: Store) -> None:
    group = f"s-{uuid.uuid4().hex[:8]}"
    base = ("-endpoint", kvd_store.url, "-group", group)
    alive = uuid.uuid4().hex
    fleet_machine(kvd_store, alive)
    assert ctl(*base, "set-max", "2").returncode == 0
    assert ctl(*base, "lock", "gone").returncode == 0
    assert ctl(*base, "lock", alive).returncode == 0
    status = ctl(*base, "status")
    assert status.returncode == 0
    # stdout is upstream's, unchanged; the warning is on stderr and names only "gone"
    holders = "\n".join(sorted(["gone", alive]))   # locksmith keeps its holders sorted
    assert status.stdout == f"Available: 0\nMax: 2\n\nMACHINE ID\n{holders}\n"
    assert status.stderr == (
        "Warning: gone holds a reboot slot but has left fleet's machine list "
        f"({FLEET}/gone/object is gone); it may be dead. "
        "'locksmithctl unlock gone' frees its slot.\n")
    unlock = ctl(*base, "unlock", "gone")
    assert unlock.returncode == 0
    assert "gone holds a reboot slot but has left fleet's machine list" in unlock.stderr
    quiet = ctl(*base, "unlock", alive)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert semaphore(kvd_store, group)["holders"] == []


def test_a_departed_holder_is_reclaimed_only_when_configured(
        kvd_store: Store, bus: PrivateBus, tmp_path: Path) -> None:
    group = f"d-{uuid.uuid4().hex[:8]}"
    base = ("-endpoint", kvd_store.url, "-group", group)
    me, alive = uuid.uuid4().hex, uuid.uuid4().hex
    fleet_machine(kvd_store, alive)
    fleet_machine(kvd_store, me)
    assert ctl(*base, "set-max", "2").returncode == 0
    assert ctl(*base, "lock", "gone").returncode == 0
    assert ctl(*base, "lock", "rebooting").returncode == 0
    # "rebooting" is also missing from fleet, but renewed a moment ago: within the grace
    put(kvd_store, f"{PREFIX}/groups/{group}/flotilla-renewals/rebooting",
        json.dumps({"holder": "rebooting", "renewed": time.time()}))
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT")
    plain = start_locksmithd(bus, tmp_path / "plain", *base, REBOOT_STRATEGY="etcd-lock",
                             machine_id=me)
    try:
        wait_until(lambda: "Failed to acquire lock: semaphore is at 0" in plain.log(), 30,
                   "a refused lock attempt without -reclaim-departed")
        assert semaphore(kvd_store, group)["holders"] == ["gone", "rebooting"]
    finally:
        plain.stop()
    daemon = start_locksmithd(bus, tmp_path / "reclaim", *base, "-reclaim-departed", "10m",
                              REBOOT_STRATEGY="etcd-lock", machine_id=me)
    try:
        wait_until(lambda: [c for c in fakes.calls() if c["call"] == "Reboot"], 40,
                   "the reboot after reclaiming the departed holder", interval=0.2)
        assert semaphore(kvd_store, group) == {"semaphore": 0, "max": 2,
                                               "holders": sorted(["rebooting", me])}
        assert "reclaimed the reboot slot of gone: its machine left fleet's" in daemon.log()
        assert "reclaimed the reboot slot of rebooting" not in daemon.log()
    finally:
        daemon.stop()
        fakes.stop()
