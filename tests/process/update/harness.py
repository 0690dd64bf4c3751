"""A private system-like bus with update-engine's policy, the fake engine, and the client.

The bus is kvd's test bus (tests/process/kv_dbus/bus.py: Debian's system.conf defaults)
with units/dbus/com.coreos.update1.conf included instead of kvd's file, so the shipped
policy is what allows or refuses each call. The engine process is
tests/process/update/fake_engine.py serving the real D-Bus service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conditions import wait_until
from tests.process.kv_dbus.bus import REPO, PrivateBus
from tests.process.kv_dbus.bus import start_bus as start_private_bus

POLICY = REPO / "units/dbus/com.coreos.update1.conf"
NOBODY = 65534
DEST, PATH, IFACE = "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager"
DETAILS_IFACE = "org.flotilla.Update1"


def start_bus(socket_path: Path | None = None) -> PrivateBus:
    """dbus-daemon with our policy; its socket is reachable by uid 65534 (when it is in
    the bus's own directory, the default: a given path outlives the bus, for restarts)."""
    return start_private_bus(socket_path, policy=POLICY, prefix="update-dbus-")


def _env(address: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": "/",
            "DBUS_SYSTEM_BUS_ADDRESS": address, "PYTHONPATH": str(REPO)}


def as_user(uid: int | None) -> dict[str, Any]:
    return {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}


def name_owner(address: str) -> str:
    """The unique name owning com.coreos.update1, "" when nobody does."""
    argv = ["dbus-send", f"--bus={address}", "--print-reply=literal",
            "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetNameOwner", f"string:{DEST}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return done.stdout.strip() if done.returncode == 0 else ""


def dbus_send(address: str, member: str, *args: str, interface: str = IFACE,
              uid: int | None = None, dest: str = DEST, path: str = PATH
              ) -> subprocess.CompletedProcess[str]:
    """``dbus-send`` a call, optionally as another user (privileges dropped)."""
    argv = ["dbus-send", f"--bus={address}", "--print-reply", "--reply-timeout=10000",
            f"--dest={dest}", path, f"{interface}.{member}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=_env(address),
                          cwd="/", **as_user(uid))


SITE_PACKAGES = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
    / "site-packages"
SYSTEM_PYTHON = "/usr/bin/python3"


def python_argv(uid: int | None, *, module: str | None = None, code: str | None = None
                ) -> list[str]:
    """A Python command line that ``uid`` can run: root uses this venv's interpreter;
    another user cannot enter root's pyenv, so Debian's python3 of the same minor
    version runs with the venv's packages added as a site directory."""
    if uid is None:
        return [sys.executable, "-m", module] if module else [sys.executable, "-c", str(code)]
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() == str(sys.version_info[:2]), (
        f"{SYSTEM_PYTHON} is {done.stdout.strip() or done.stderr}, not this venv's "
        f"{sys.version_info[:2]}: uid {uid} cannot run the client")
    boot = f"import site, sys; site.addsitedir({str(SITE_PACKAGES)!r}); sys.path.insert(0, '')"
    if module:
        boot += f"; import runpy; runpy.run_module({module!r}, run_name='__main__')"
    else:
        boot += "\n" + str(code)
    return [SYSTEM_PYTHON, "-c", boot]


def client(address: str, *flags: str, uid: int | None = None, timeout: float = 60
           ) -> subprocess.CompletedProcess[str]:
    """``python -m flotilla.daemons.update.client FLAGS`` against ``address``."""
    argv = [*python_argv(uid, module="flotilla.daemons.update.client"), *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=_env(address), cwd="/", **as_user(uid))


def start_client(address: str, *flags: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "flotilla.daemons.update.client", *flags]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(address), cwd="/", start_new_session=True)


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Engine:
    """The fake engine process: send it commands, read what it was asked."""

    proc: subprocess.Popen[str]
    log: Path
    sent: int = 0
    stderr_path: Path = field(default_factory=Path)

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def calls(self, name: str) -> int:
        return sum(1 for e in self.entries() if e.get("call") == name)

    def send(self, **command: Any) -> None:
        """One command; returns once the engine acted on it (and fails on its error)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        self.sent += 1
        number = self.sent
        ack = wait_until(lambda: next((e for e in self.entries() if e.get("ack") == number),
                                      None), 15, f"the fake engine to act on {command}")
        assert "error" not in ack, ack["error"]

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop(self.proc)


def start_engine(address: str, workdir: Path) -> Engine:
    """The fake engine on the bus; returns once it owns com.coreos.update1."""
    log = workdir / f"engine-{time.monotonic_ns()}.log"
    err = log.with_suffix(".stderr")
    argv = [sys.executable, "-m", "tests.process.update.fake_engine", "--bus", address,
            "--log", str(log)]
    with err.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=stderr, text=True,
                                env=_env(address), cwd=str(REPO), start_new_session=True)
    engine = Engine(proc, log, stderr_path=err)
    try:
        wait_until(lambda: proc.poll() is not None or name_owner(address), 30,
                   "the fake engine to own com.coreos.update1")
        if proc.poll() is not None:
            raise RuntimeError("fake engine exited: " + err.read_text(errors="replace"))
    except BaseException:
        engine.stop()
        raise
    return engine
