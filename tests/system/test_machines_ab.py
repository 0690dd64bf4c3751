"""The harness as bootloader: a machine boots /usr from the slot gptprio picks, every boot.

This is the ground the update engine's system tests stand on, checked on its own: what
the harness mounts as /usr follows the partition table exactly as GRUB would — an update
written to USR-B and given one try boots once; unconfirmed, the next boot falls back to
USR-A; confirmed (marked good), it stays.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flotilla.daemons.update import gptprio

from tests.machines import Cluster
from tests.machines.abboot import RELEASE_FILE, USR_A, USR_B, ABMachine, write_release


@pytest.fixture(scope="module")
def ab(rootfs_template) -> ABMachine:
    for tool in ("sgdisk", "losetup", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: tests/setup.sh installs it")
    cluster = Cluster(1, prefix="ab", machine_class=ABMachine)
    try:
        cluster.boot()
        yield cluster[0]
    finally:
        cluster.destroy()


def release(machine: ABMachine) -> str:
    return machine.run(["cat", f"/usr/{RELEASE_FILE}"]).stdout


def booted_partuuid(machine: ABMachine) -> str:
    words = machine.run(["cat", "/proc/1/cmdline"]).stdout.split("\0")
    found = [w for w in words if w.startswith("mount.usr=PARTUUID=")]
    assert len(found) == 1, words
    return found[0].split("=", 2)[2]


def flags(machine: ABMachine) -> dict[int, gptprio.Flags]:
    return {s.number: s.flags for s in machine.disk.slots() if s.is_usr}


def test_first_boot_runs_usr_a_and_the_disk_is_visible_inside(ab: ABMachine) -> None:
    assert "COREOS_RELEASE_VERSION=1.0.0" in release(ab)
    assert booted_partuuid(ab) == gptprio.USR_A_UUID
    assert ab.run(["findmnt", "-n", "-o", "OPTIONS", "/usr"]).stdout.startswith("ro")
    device = ab.disk.device
    assert device is not None
    ab.run(["test", "-b", f"{device}p{USR_B}"])  # an engine inside can write the slot
    assert flags(ab)[USR_A] == gptprio.Flags(priority=1, tries=0, successful=True)


def _stage_update(machine: ABMachine, tmp: Path, version: str) -> None:
    """What an update engine does, from the host: new /usr into USR-B, B tried next."""
    tree = tmp / f"usr-{version}"
    shutil.copytree(machine.usr_mount, tree, symlinks=True)
    write_release(tree, version)
    machine.disk.write_slot(USR_B, tree)
    machine.disk.set_slots(gptprio.after_install(machine.disk.slots(), USR_B))


def test_unconfirmed_update_boots_once_then_rolls_back(ab: ABMachine, tmp_path: Path) -> None:
    _stage_update(ab, tmp_path, "2.0.0")
    assert flags(ab)[USR_B] == gptprio.Flags(priority=2, tries=1, successful=False)
    ab.reboot()
    assert "COREOS_RELEASE_VERSION=2.0.0" in release(ab)
    assert booted_partuuid(ab) == gptprio.USR_B_UUID
    assert flags(ab)[USR_B].tries == 0  # the harness spent the try before booting
    ab.reboot()  # nobody marked B good: the next boot goes back to A
    assert "COREOS_RELEASE_VERSION=1.0.0" in release(ab)
    assert booted_partuuid(ab) == gptprio.USR_A_UUID
    assert ab.boot_history[-3:] == ["USR-A", "USR-B", "USR-A"]


def test_confirmed_update_stays(ab: ABMachine, tmp_path: Path) -> None:
    _stage_update(ab, tmp_path, "3.0.0")
    ab.reboot()
    assert booted_partuuid(ab) == gptprio.USR_B_UUID
    ab.disk.set_slots(gptprio.mark_good(ab.disk.slots(), USR_B))
    ab.reboot()
    assert "COREOS_RELEASE_VERSION=3.0.0" in release(ab)
    assert flags(ab)[USR_B] == gptprio.Flags(priority=2, tries=0, successful=True)
    assert flags(ab)[USR_A] == gptprio.Flags(priority=1, tries=0, successful=True)
