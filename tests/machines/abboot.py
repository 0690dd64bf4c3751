"""Test machines whose /usr lives on an A/B disk, with the harness playing the bootloader.

A CoreOS machine boots /usr from one of two GPT partitions, USR-A or USR-B, chosen at
each boot by GRUB's gptprio rule. An :class:`ABMachine` gets the same: a disk image (a
sparse file on a loop device) with a GPT and two USR slots; USR-A holds the machine's
/usr as an ext4 filesystem, USR-B starts empty. At every boot the harness applies
the one shared rule (``flotilla.daemons.update.gptprio.choose_boot``, spending a try and
writing it back as GRUB does), mounts the chosen slot read-only on the host and hands
it to systemd-nspawn as the machine's /usr, passing ``mount.usr=PARTUUID=<uuid>`` to init
the way GRUB passes it to the kernel (systemd in a container reads its own command line
in place of the kernel's). The disk and its partitions are visible inside, so an update
engine there writes the passive slot and the table. A reboot from inside (nspawn exits
with 133) makes the harness choose and boot again (:meth:`Machine.follow_reboot`, whose
next start chooses anew).

Every loop device and mount is recorded in the machine's folder, so the stale-run sweep
removes them even when a test run was killed outright.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from flotilla.daemons.update import disk, gptprio

from .machine import BOOT_DEADLINE, Machine, MachineError

SLOT_BYTES = 1 << 30
RELEASE_FILE = "share/coreos/release"
USR_A, USR_B = 3, 4


def _run(*argv: str, timeout: float = 300) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise MachineError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return result.stdout


def write_release(usr: Path, version: str) -> None:
    """The release file update engines read their version from, in a /usr tree."""
    target = usr / RELEASE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"COREOS_RELEASE_VERSION={version}\nCOREOS_RELEASE_BOARD=amd64-usr\n")


class ABDisk:
    """The image file, its loop device while attached, and the slots' filesystems."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.record = image.with_suffix(".loop")  # the attached device, for the sweep

    @property
    def device(self) -> str | None:
        try:
            device = self.record.read_text().strip()
        except OSError:
            return None
        return device or None

    def create(self) -> None:
        """A GPT with the CoreOS USR-A/USR-B entries; A marked good and bootable."""
        with self.image.open("wb") as f:
            f.truncate(2 * SLOT_BYTES + (4 << 20))
        size = f"+{SLOT_BYTES // (1 << 20)}M"
        _run("sgdisk", "-o",
             "-n", f"{USR_A}:2048:{size}", "-t", f"{USR_A}:{gptprio.USR_TYPE_GUID}",
             "-c", f"{USR_A}:USR-A", "-u", f"{USR_A}:{gptprio.USR_A_UUID}",
             "-n", f"{USR_B}:0:{size}", "-t", f"{USR_B}:{gptprio.USR_TYPE_GUID}",
             "-c", f"{USR_B}:USR-B", "-u", f"{USR_B}:{gptprio.USR_B_UUID}",
             str(self.image))
        slots = gptprio.mark_good(disk.read_table(str(self.image)).slots, USR_A)
        disk.set_attributes(str(self.image), {s.number: s.attributes for s in slots})

    def attach(self) -> str:
        if self.device is not None:
            return self.device
        device = _run("losetup", "--find", "--show", "--partscan", str(self.image)).strip()
        self.record.write_text(device)
        # The kernel's own scan at attach time does not always register the partitions
        # here (no udev on the host); partx adds whatever is missing.
        subprocess.run(["partx", "-a", device], capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all(Path(self.partition(n)).exists() for n in (USR_A, USR_B)):
            if time.monotonic() > deadline:
                raise MachineError(f"{device}: partitions did not appear")
            time.sleep(0.05)
        return device

    def detach(self) -> None:
        device = self.device
        if device is not None:
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
            self.record.unlink(missing_ok=True)

    def partition(self, number: int) -> str:
        if self.device is None:
            raise MachineError(f"{self.image} is not attached")
        return f"{self.device}p{number}"

    def write_slot(self, number: int, usr_tree: Path) -> None:
        """Makes slot ``number``'s filesystem from ``usr_tree`` (as an update would)."""
        label = "USR-A" if number == USR_A else "USR-B"
        _run("mkfs.ext4", "-q", "-F", "-L", label, "-d", str(usr_tree), self.partition(number))

    def slots(self) -> tuple[gptprio.Slot, ...]:
        return disk.read_table(self.device or str(self.image)).slots

    def set_slots(self, slots: tuple[gptprio.Slot, ...]) -> None:
        disk.set_attributes(self.device or str(self.image),
                            {s.number: s.attributes for s in slots if s.is_usr})

    def choose(self) -> gptprio.Slot:
        """GRUB's step: the slot to boot, with a spent try written back before booting."""
        choice = gptprio.choose_boot(self.slots())
        if choice is None:
            raise MachineError(f"{self.image}: no bootable USR slot")
        if choice.try_spent:
            self.set_slots(choice.slots)
        return choice.slot


class ABMachine(Machine):
    """A :class:`Machine` whose /usr is whichever slot the bootloader rule picks."""

    def __init__(self, *args, release_version: str = "1.0.0", **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.release_version = release_version
        self.disk = ABDisk(self.dir / "disk.img")
        self.usr_mount = self.dir / "usr"
        self.booted: gptprio.Slot | None = None
        self.boot_history: list[str] = []

    def prepare(self) -> None:
        """The root copy as usual, then its /usr moved into USR-A."""
        super().prepare()
        if self.disk.image.exists():
            return
        usr = self.root / "usr"
        write_release(usr, self.release_version)
        self.disk.create()
        self.disk.attach()
        self.disk.write_slot(USR_A, usr)
        os_release = (usr / "lib/os-release").read_bytes()
        shutil.rmtree(usr)
        # Left empty but for os-release, which nspawn looks for before it mounts anything:
        # the chosen slot is mounted over this directory at each boot.
        (usr / "lib").mkdir(parents=True)
        (usr / "lib/os-release").write_bytes(os_release)

    def _boot_arguments(self) -> list[str]:
        device = self.disk.attach()
        self.booted = self.disk.choose()
        self.boot_history.append(self.booted.label)
        self.usr_mount.mkdir(exist_ok=True)
        (self.dir / "usr.mounted").write_text(str(self.usr_mount))
        _run("mount", "-o", "ro", self.disk.partition(self.booted.number), str(self.usr_mount))
        binds = [f"--bind={device}"] + [
            f"--bind={self.disk.partition(n)}" for n in (USR_A, USR_B)]
        return [f"--bind-ro={self.usr_mount}:/usr", *binds, "--",
                f"mount.usr=PARTUUID={self.booted.uuid}"]

    def _after_stop(self) -> None:
        unmount(self.dir)

    def reboot(self, timeout: float = BOOT_DEADLINE) -> str:
        """``systemctl reboot`` inside, as an operator or locksmith would, and follow it."""
        self.run(["systemctl", "reboot"], check=False, timeout=30)
        return self.follow_reboot(timeout)

    def destroy(self) -> None:
        try:
            self.kill()
        finally:
            unmount(self.dir)
            if not os.path.ismount(self.usr_mount):
                shutil.rmtree(self.dir, ignore_errors=True)


def unmount(machine_dir: Path) -> None:
    """Unmounts a machine's /usr and detaches its disk, from its folder's records."""
    record = machine_dir / "usr.mounted"
    with contextlib.suppress(OSError):
        where = record.read_text().strip()
        if where and os.path.ismount(where):
            subprocess.run(["umount", where], capture_output=True, timeout=60)
        record.unlink()
    ABDisk(machine_dir / "disk.img").detach()
