"""A locksmithd waiting for a full semaphore takes a freed slot at once, not after the
rest of its back-off (upstream slept the whole back-off: a rolling reboot was paced by
its retry timers). Real kvd, real bus, the fake logind of the harness."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.conditions import wait_until
from tests.process.fleet.harness import Store

from .harness import PrivateBus, ctl, start_fakes, start_locksmithd

FAILED = "Failed to acquire lock: semaphore is at 0"


def test_a_freed_slot_ends_the_lock_back_off(kvd_store: Store, bus: PrivateBus,
                                             tmp_path: Path) -> None:
    group = f"w-{uuid.uuid4().hex[:8]}"
    base = ("-endpoint", kvd_store.url, "-group", group)
    assert ctl(*base, "lock", "other").returncode == 0
    fakes = start_fakes(bus, status="UPDATE_STATUS_UPDATED_NEED_REBOOT")
    daemon = start_locksmithd(bus, tmp_path, *base, REBOOT_STRATEGY="etcd-lock")
    try:
        # two refused attempts: the back-off now in force is 10 s
        wait_until(lambda: daemon.log().count(FAILED) >= 2, 30, "two refused lock attempts",
                   interval=0.1)
        assert "retrying the lock in 10s" in daemon.log()
        freed = time.monotonic()
        assert ctl(*base, "unlock", "other").returncode == 0
        wait_until(lambda: [c for c in fakes.calls() if c["call"] == "Reboot"], 5,
                   "the reboot well inside the 10 s back-off", interval=0.05)
        print(f"slot freed -> reboot asked: {time.monotonic() - freed:.2f}s")
        assert daemon.log().count(FAILED) == 2
    finally:
        daemon.stop()
        fakes.stop()
