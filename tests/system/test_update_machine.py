"""An A/B test machine updates itself with our update engine, reboots, and confirms or falls back.

The machine's /usr is an ext4 image in USR-A with the Flotilla package baked in (as an
image would ship it) and the payload key under /usr/share/update_engine. Releases are cut
from the running tree with ``flotilla-update-payload`` and offered by an Omaha server on
the test bridge. Inside, ``update_engine_client -update`` makes update-engine.service
write the passive slot and give it one try, reporting UPDATED_NEED_REBOOT on D-Bus (seen
by ``busctl`` and ``update_engine_client -watch_for_updates``); the harness, playing GRUB,
boots it. 2.0.0 goes to USR-B and, its health unit active, is marked good and stays; 3.0.0
then goes to USR-A with a health unit that never comes up, is never marked good, and the
next boot falls back to 2.0.0, which the next check reports to the server as a rollback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flotilla.daemons.update import gpt, gptprio

from tests.conditions import wait_until
from tests.machines import Cluster
from tests.machines.abboot import RELEASE_FILE, USR_A, USR_B, ABMachine, write_release
from tests.machines.machine import Machine
from tests.packages import built_packages
from tests.process.update.omaha_server import OmahaServer
from tests.unit.update.test_update_payload import key

KEY_PATH = "share/update_engine/update-payload-key.pub.pem"


class UpdatableMachine(ABMachine):
    """An A/B machine whose USR-A carries the Flotilla package and the payload key."""

    deb: Path
    public_pem: bytes

    def prepare(self) -> None:
        Machine.prepare(self)
        if not self.disk.image.exists():
            subprocess.run(["dpkg-deb", "-x", str(self.deb), str(self.root)], check=True,
                           timeout=300)
            pem = self.root / "usr" / KEY_PATH
            pem.parent.mkdir(parents=True, exist_ok=True)
            pem.write_bytes(self.public_pem)
        super().prepare()


@pytest.fixture(scope="module")
def machine(rootfs_template, tmp_path_factory) -> Iterator[UpdatableMachine]:
    for tool in ("sgdisk", "losetup", "mkfs.ext4", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: tests/setup.sh installs it")
    UpdatableMachine.deb = built_packages()["deb"]
    UpdatableMachine.public_pem = key("release").public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    cluster = Cluster(1, prefix="up", machine_class=UpdatableMachine)
    try:
        cluster.boot()
        yield cluster[0]  # type: ignore[misc]
    finally:
        cluster.destroy()


def cut_release(machine: UpdatableMachine, version: str, work: Path) -> bytes:
    """A release: the running /usr tree with a new release file, cut and signed."""
    tree = work / f"usr-{version}"
    shutil.copytree(machine.usr_mount, tree, symlinks=True)
    write_release(tree, version)
    used = int(subprocess.run(["du", "-sb", str(tree)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    image = work / f"usr-{version}.img"
    with image.open("wb") as f:
        f.truncate((used * 13 // 10 // (1 << 20) + 32) << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image)],
                   check=True, timeout=300)
    shutil.rmtree(tree)
    private = work / "release.pem"
    private.write_bytes(key("release").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    out = work / f"update-{version}.gz"
    done = subprocess.run([sys.executable, "-m", "flotilla.daemons.update.payload_tool",
                           "generate", "--image", str(image), "--private-key", str(private),
                           "--output", str(out), "--version", version, "--compression", "none"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    image.unlink()
    payload = out.read_bytes()
    out.unlink()
    return payload


@pytest.fixture
def server(machine: UpdatableMachine) -> Iterator[OmahaServer]:
    assert machine.bridge is not None
    with OmahaServer(str(machine.bridge.host_address)) as omaha_server:
        yield omaha_server


def configure(machine: UpdatableMachine, server: OmahaServer, health_unit: str) -> None:
    machine.write_file("/etc/coreos/update.conf",
                       f"SERVER={server.url}/v1/update/\nGROUP=stable\n"
                       "CHECK_INITIAL_DELAY=1h\nMARK_GOOD_DELAY=2s\n"
                       f"HEALTH_CHECK_UNITS={health_unit}\n")
    machine.run(["systemctl", "enable", "update-engine.service"])
    machine.run(["systemctl", "restart", "update-engine.service"], timeout=120)


def release(machine: UpdatableMachine) -> str:
    return machine.run(["cat", f"/usr/{RELEASE_FILE}"]).stdout


def flags(machine: UpdatableMachine, number: int) -> gptprio.Flags:
    """The slot's attributes, read from the host; a read that lands between the engine's
    writes of the two table copies sees them differ and is refused, so it is read again."""
    slots = wait_until(machine.disk.slots, 10, "a consistent partition table",
                       tolerate=(gpt.GptError,))
    return next(s.flags for s in slots if s.number == number)


def client(machine: UpdatableMachine, *flags_: str, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    return machine.run(["update_engine_client", *flags_], check=False, timeout=timeout)


def busctl_status(machine: UpdatableMachine) -> str:
    return machine.run(["busctl", "call", "com.coreos.update1", "/com/coreos/update1",
                        "com.coreos.update1.Manager", "GetStatus"]).stdout


def update_to(machine: UpdatableMachine, server: OmahaServer, payload: bytes, version: str,
              health_unit: str, target: int) -> None:
    """Offer ``version``; the engine writes slot ``target`` and reports it on D-Bus."""
    server.payload = payload
    server.version = version
    configure(machine, server, health_unit)
    watcher = f"watch-updates-{version.replace('.', '-')}"
    machine.run(["systemd-run", f"--unit={watcher}", "update_engine_client",
                 "-watch_for_updates"])
    done = client(machine, "-update", timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr
                                  + machine.journal(80, unit="update-engine.service"))
    status = client(machine, "-status").stdout
    assert "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT" in status
    assert f"NEW_VERSION={version}" in status
    reply = busctl_status(machine)
    assert reply.startswith("xdssx ") and '"UPDATE_STATUS_UPDATED_NEED_REBOOT"' in reply
    assert f'"{version}"' in reply
    wait_until(lambda: "current_operation: UPDATE_STATUS_UPDATED_NEED_REBOOT" in machine.journal(
        200, unit=watcher), 30, "-watch_for_updates to print the NEED_REBOOT signal")
    assert flags(machine, target) == gptprio.Flags(priority=2, tries=1, successful=False)
    machine.run(["test", "-e", "/run/reboot-required"])


def test_an_update_is_written_booted_and_marked_good(
        machine: UpdatableMachine, server: OmahaServer, tmp_path: Path) -> None:
    update_to(machine, server, cut_release(machine, "2.0.0", tmp_path), "2.0.0",
              "dbus.service", USR_B)
    machine.reboot()
    assert "COREOS_RELEASE_VERSION=2.0.0" in release(machine)
    wait_until(lambda: flags(machine, USR_B).successful, 60,
               "the engine to mark USR-B good once dbus.service is active")
    assert flags(machine, USR_B) == gptprio.Flags(priority=2, tries=0, successful=True)
    assert "MARKED_GOOD='USR-B is marked good'" in client(machine, "-status").stdout
    machine.reboot()
    assert "COREOS_RELEASE_VERSION=2.0.0" in release(machine)
    assert machine.boot_history[-1] == "USR-B"
    assert flags(machine, USR_A).successful  # the old slot stays a fallback


def test_a_second_update_failing_its_health_check_rolls_back_and_says_so(
        machine: UpdatableMachine, server: OmahaServer, tmp_path: Path) -> None:
    assert "COREOS_RELEASE_VERSION=2.0.0" in release(machine)  # from the first test
    update_to(machine, server, cut_release(machine, "3.0.0", tmp_path), "3.0.0",
              "flotilla-never-healthy.service", USR_A)
    machine.reboot()
    assert "COREOS_RELEASE_VERSION=3.0.0" in release(machine)
    wait_until(lambda: "waiting for flotilla-never-healthy.service" in client(
        machine, "-status").stdout, 60, "the engine to wait for its health unit")
    assert flags(machine, USR_A).successful is False
    machine.reboot()
    assert "COREOS_RELEASE_VERSION=2.0.0" in release(machine)
    assert machine.boot_history[-3:] == ["USR-B", "USR-A", "USR-B"]
    # The next check tells the server the update rolled back (Flatcar's 3/0 code 44).
    server.payload = None
    assert client(machine, "-check_for_update").returncode == 0
    wait_until(lambda: server.kinds()[-1:] == ["check"] and len(server.kinds()) > 1, 60,
               "the check after the rollback")
    assert (3, 0, 44) in server.seen[-1].events
