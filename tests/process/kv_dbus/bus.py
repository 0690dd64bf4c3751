"""A private dbus-daemon configured like the system bus, with kvd's policy included.

The default policy is the one Debian's system.conf sets (deny method calls and name
ownership, allow signals and replies, everyone may talk to the bus driver), so what the
shipped policy file allows or refuses here it allows or refuses on a real system bus.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conditions import wait_until

REPO = Path(__file__).resolve().parents[3]
POLICY = REPO / "units/dbus/org.flotilla.KV1.conf"

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="BecomeMonitor"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


@dataclass
class PrivateBus:
    address: str
    socket_path: Path
    proc: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def start_bus(socket_path: Path | None = None, *, policy: Path = POLICY,
              policy_text: str | None = None, prefix: str = "kvd-dbus-") -> PrivateBus:
    """Start a bus with Debian's system.conf defaults and ``policy`` (kvd's unless told;
    ``policy_text`` is a policy written for the test); its socket sits in a directory the
    unprivileged caller can reach."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)  # uid 65534 must reach the socket
    if policy_text is not None:
        policy = workdir / "policy.conf"
        policy.write_text(policy_text)
    socket_path = socket_path or workdir / "system_bus_socket"
    config = workdir / "bus.conf"
    config.write_text(CONFIG.format(socket=socket_path, policy=policy))
    log = open(workdir / "dbus-daemon.log", "wb")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile",
                             f"--config-file={config}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    bus = PrivateBus(f"unix:path={socket_path}", socket_path, proc, workdir)
    try:
        wait_until(lambda: proc.poll() is not None or _accepts(socket_path), 10,
                   "the private dbus-daemon to accept connections")
        if proc.poll() is not None:
            raise RuntimeError("dbus-daemon exited: "
                               + (workdir / "dbus-daemon.log").read_text(errors="replace"))
    except BaseException:
        bus.stop()
        raise
    return bus


def dbus_send(address: str, method: str, *args: str, uid: int | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``dbus-send`` to kvd's object, optionally as another user (privileges dropped)."""
    argv = ["dbus-send", f"--bus={address}", "--print-reply", "--reply-timeout=10000",
            "--dest=org.flotilla.KV1", "/org/flotilla/KV1", f"org.flotilla.KV1.{method}",
            *args]
    extra = {}
    if uid is not None:
        extra = {"user": uid, "group": uid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": "/"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env,
                          cwd="/", **extra)


def name_has_owner(address: str) -> bool:
    argv = ["dbus-send", f"--bus={address}", "--print-reply",
            "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner", "string:org.flotilla.KV1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
    return "boolean true" in out
