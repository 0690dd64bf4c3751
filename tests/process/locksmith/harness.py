"""locksmithctl and locksmithd as processes, against kvd or etcd and a private bus.

The store is the fleet harness's :class:`Store` (kvd or Debian's etcd, v2 API). The bus
is a private dbus-daemon with the system bus's default policy plus a test policy that lets
root own ``org.freedesktop.login1`` and ``com.coreos.update1``: the host's logind must
never be asked to reboot, so ``fake_services.py`` stands in for logind (it records each
Reboot call) and for update-engine's GetStatus. Everything else is real: the daemon's
D-Bus client, the signal from ``locksmithctl send-need-reboot``, the store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conditions import wait_until
from tests.process.kv_dbus.bus import REPO, PrivateBus
from tests.process.kv_dbus.bus import start_bus as start_private_bus

PYTHON = sys.executable
FAKES = Path(__file__).with_name("fake_services.py")
POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.login1"/>
    <allow own="com.coreos.update1"/>
    <allow send_destination="org.freedesktop.login1"/>
    <allow send_destination="com.coreos.update1"/>
  </policy>
</busconfig>
"""


def env(**extra: str) -> dict[str, str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": "/",
            "PYTHONPATH": str(REPO)}
    base.update(extra)
    return base


def ctl(*args: str, timeout: float = 30, **extra: str) -> subprocess.CompletedProcess[str]:
    """Runs our locksmithctl; returns its exit code, stdout and stderr."""
    return subprocess.run([PYTHON, "-m", "flotilla.daemons.locksmith.ctl", *args],
                          capture_output=True, text=True, timeout=timeout, env=env(**extra),
                          cwd="/")


def start_bus() -> PrivateBus:
    """dbus-daemon with the stand-ins' policy (written for the test, like the fakes)."""
    return start_private_bus(policy_text=POLICY, prefix="locksmith-dbus-")


@dataclass
class Fakes:
    """The stand-in logind and update-engine; ``calls()`` reads what was asked of them."""

    proc: subprocess.Popen[str]
    record: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_fakes(bus: PrivateBus, *, status: str = "UPDATE_STATUS_IDLE",
                refuse_reboots: int = 0) -> Fakes:
    record = bus.workdir / f"calls-{uuid.uuid4().hex[:8]}.jsonl"
    ready = bus.workdir / f"ready-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [PYTHON, str(FAKES), "--record", str(record), "--ready", str(ready),
         "--status", status, "--refuse-reboots", str(refuse_reboots)],
        env=env(DBUS_SYSTEM_BUS_ADDRESS=bus.address), text=True,
        stdout=subprocess.DEVNULL, stderr=open(bus.workdir / "fakes.log", "a"))  # noqa: SIM115
    fakes = Fakes(proc, record)
    try:
        wait_until(lambda: proc.poll() is not None or ready.exists(), 20,
                   "the fake logind and update-engine to own their names")
        if proc.poll() is not None:
            raise RuntimeError((bus.workdir / "fakes.log").read_text())
    except BaseException:
        fakes.stop()
        raise
    return fakes


@dataclass
class Locksmithd:
    proc: subprocess.Popen[bytes]
    root: Path
    machine_id: str
    log_path: Path
    notify: socket.socket
    notes: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def notifications(self) -> list[str]:
        """Every sd_notify line received so far."""
        while True:
            try:
                data = self.notify.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return self.notes
            self.notes.extend(data.decode().splitlines())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.notify.close()
        return self.proc.returncode


def start_locksmithd(bus: PrivateBus, root: Path, *flags: str, update_conf: str = "",
                     machine_id: str = "", **extra: str) -> Locksmithd:
    """locksmithd with its own root (machine-id, update.conf, no utmp) and notify socket."""
    machine_id = machine_id or uuid.uuid4().hex
    (root / "etc/coreos").mkdir(parents=True, exist_ok=True)
    (root / "etc/machine-id").write_text(machine_id + "\n")
    (root / "etc/coreos/update.conf").write_text(update_conf)
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    log_path = root / "locksmithd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PYTHON, "-m", "flotilla.daemons.locksmith.main", "-root", str(root), *flags],
            env=env(DBUS_SYSTEM_BUS_ADDRESS=bus.address, NOTIFY_SOCKET=str(notify_path),
                    **extra),
            stdout=log, stderr=subprocess.STDOUT, cwd="/")
    return Locksmithd(proc, root, machine_id, log_path, notify)
