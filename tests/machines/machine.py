"""One booted test machine: a throwaway copy of the cached root run by systemd-nspawn.

The machine's root is a plain directory (a copy, not an overlay mount), so a killed test
leaves no mount behind on the host and the tree can be inspected after the fact. The
container's init is found as the ``systemd`` process below the launcher, and everything
else is done by entering its namespaces with nsenter, as an operator would.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from . import cgroups, network

BOOT_DEADLINE = 90.0
STOP_DEADLINE = 30.0
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot


class MachineError(RuntimeError):
    """A machine did not do what the harness asked within its deadline."""


def _wait_for(predicate, deadline: float, what: str, interval: float = 0.05):
    """Polls ``predicate`` until it returns a truthy value or ``deadline`` (monotonic) passes."""
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise MachineError(f"timed out waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone as far as the machine is concerned.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return kids


class Machine:
    """A test machine. Create through :class:`tests.machines.cluster.Cluster`."""

    def __init__(
        self,
        name: str,
        template: Path,
        workdir: Path,
        bridge: network.Bridge | None,
        address: ipaddress.IPv4Address | None,
        hosts: dict[str, str] | None = None,
    ) -> None:
        if len(name) > 12:
            raise ValueError(f"machine name {name!r}: at most 12 characters (veth name limit)")
        self.name = name
        self.template = template
        self.dir = workdir / name
        self.root = self.dir / "root"
        self.bridge = bridge
        self.address = address
        self.hosts = hosts or {}
        self.machine_id = secrets.token_hex(16)
        self.launcher: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None
        self._cgroups: list[Path] = []
        self.boots = 0

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def veth(self) -> str:
        """Host side of the machine's link, as systemd-nspawn names it."""
        return f"vb-{self.name}"

    def prepare(self) -> None:
        """Copies the template root and gives the copy its identity and network."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.root.exists():
            return
        staging = self.dir / "root.copying"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.template), str(staging)], check=True)
        # The copy's few hundred MiB are written out now, before anything runs: left to
        # background writeback they queue every fsync the machines' daemons make in their
        # first minute behind them, and a kvd whose write waits seconds misses heartbeats.
        subprocess.run(["sync", "-f", str(staging)], check=True)
        (staging / ".complete").unlink(missing_ok=True)
        (staging / "etc/machine-id").write_text(self.machine_id + "\n")
        (staging / "etc/hostname").write_text(self.name + "\n")
        hosts = ["127.0.0.1 localhost", f"127.0.1.1 {self.name}"]
        hosts += [f"{addr} {host}" for host, addr in self.hosts.items() if host != self.name]
        (staging / "etc/hosts").write_text("\n".join(hosts) + "\n")
        if self.address is not None and self.bridge is not None:
            netdir = staging / "etc/systemd/network"
            netdir.mkdir(parents=True, exist_ok=True)
            (netdir / "10-host0.network").write_text(
                "[Match]\nName=host0\n\n[Network]\n"
                f"Address={self.address}/{self.bridge.subnet.prefixlen}\n"
                "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            )
        staging.rename(self.root)

    def start(self) -> None:
        """Launches systemd-nspawn in a cgroup of its own (returns before boot completes)."""
        if self.running:
            raise MachineError(f"{self.name} is already running")
        self.prepare()
        self._cgroups = cgroups.create(f"flotilla-{self.name}")
        cmd = [
            "systemd-nspawn",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--quiet",
            f"--directory={self.root}",
            f"--machine={self.name}",
            f"--uuid={self.machine_id}",
            "--console=read-only",
            "--link-journal=no",
        ]
        if self.bridge is not None:
            cmd.append(f"--network-bridge={self.bridge.name}")
        cmd += self._boot_arguments()
        paths = self._cgroups
        with open(self.dir / f"console-{self.boots}.log", "wb") as log:
            self.launcher = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: cgroups.enter(paths),
                start_new_session=True,
            )
        (self.dir / "launcher.pid").write_text(str(self.launcher.pid))
        self.boots += 1
        self.init_pid = None

    def _boot_arguments(self) -> list[str]:
        """Extra nspawn options, then arguments for init: the hook a bootloader plays in."""
        return []

    def _after_stop(self) -> None:
        """Undo what a boot set up on the host once the machine is down (mounts, devices)."""

    def _find_init(self) -> int | None:
        if self.launcher is None or self.launcher.poll() is not None:
            raise MachineError(
                f"{self.name}: systemd-nspawn exited early:\n{self.console_log()[-2000:]}"
            )
        queue = [self.launcher.pid]
        own_ns = os.readlink("/proc/self/ns/pid")
        while queue:
            pid = queue.pop()
            for child in _children(pid):
                try:
                    comm = Path(f"/proc/{child}/comm").read_text().strip()
                    ns = os.readlink(f"/proc/{child}/ns/pid")
                except OSError:
                    continue
                if comm == "systemd" and ns != own_ns:
                    return child
                queue.append(child)
        return None

    def wait_running(self, timeout: float = BOOT_DEADLINE) -> str:
        """Blocks until systemd inside reports ``running`` or ``degraded``; returns the state."""
        deadline = time.monotonic() + timeout
        self.init_pid = _wait_for(self._find_init, deadline, f"{self.name}: container init")
        _wait_for(
            lambda: Path(f"/proc/{self.init_pid}/root/run/systemd/private").exists(),
            deadline,
            f"{self.name}: systemd's private socket",
        )
        remaining = max(1.0, deadline - time.monotonic())
        try:
            result = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=remaining
            )
        except subprocess.TimeoutExpired as exc:
            raise MachineError(f"{self.name}: boot did not finish in {timeout:.0f}s") from exc
        state = result.stdout.strip()
        if state not in ("running", "degraded"):
            raise MachineError(f"{self.name}: systemd reports {state!r} after boot")
        if self.address is not None:
            _wait_for(
                lambda: str(self.address) in self.run(["ip", "-4", "-o", "addr"]).stdout,
                deadline,
                f"{self.name}: address {self.address} on host0",
            )
        return state

    @property
    def running(self) -> bool:
        return self.launcher is not None and self.launcher.poll() is None

    def kill(self) -> None:
        """Power cut: SIGKILL the launcher and the container's init, and wait until gone."""
        init = self.init_pid
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.kill()
        if init is not None and pid_alive(init):
            os.kill(init, signal.SIGKILL)
        deadline = time.monotonic() + STOP_DEADLINE
        if init is not None:
            _wait_for(lambda: not pid_alive(init), deadline, f"{self.name}: init to die")
        self._reap(deadline)

    def stop(self, timeout: float = STOP_DEADLINE) -> None:
        """Clean shutdown (nspawn turns SIGTERM into a poweroff); falls back to :meth:`kill`."""
        if self.launcher is None or self.launcher.poll() is not None:
            self._reap(time.monotonic() + timeout)
            return
        self.launcher.terminate()
        try:
            self.launcher.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._reap(time.monotonic() + timeout)

    def _reap(self, deadline: float) -> None:
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()
        # Anything left in the machine's cgroups is remains of the container: end it.
        cgroups.kill_all(self._cgroups)
        _wait_for(
            lambda: not cgroups.pids(self._cgroups), deadline, f"{self.name}: processes to exit"
        )
        cgroups.remove(self._cgroups)
        if network.link_exists(self.veth):
            network.delete_link(self.veth)
        self.init_pid = None
        self._after_stop()

    def restart(self, timeout: float = BOOT_DEADLINE) -> str:
        """Boots the same machine (same root, same identity) again after a stop or kill."""
        if self.running:
            self.stop()
        self.start()
        return self.wait_running(timeout)

    def wait_reboot_request(self, timeout: float) -> None:
        """Waits until the machine asks for a reboot (nspawn exits 133) and cleans up
        after it, without booting again; MachineError on another exit or none in time."""
        if self.launcher is None:
            raise MachineError(f"{self.name} was never started")
        try:
            status = self.launcher.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise MachineError(f"{self.name}: no reboot within {timeout:.0f}s") from exc
        if status != REBOOT_EXIT:
            raise MachineError(f"{self.name}: nspawn exited {status}, not a reboot "
                               f"({REBOOT_EXIT})\n{self.console_log()[-2000:]}")
        self._reap(time.monotonic() + STOP_DEADLINE)

    def follow_reboot(self, timeout: float = BOOT_DEADLINE) -> str:
        """Waits for the reboot the machine asked for (from inside: logind, systemctl),
        then boots it again, as a host's nspawn unit with RestartForceExitStatus=133 does."""
        self.wait_reboot_request(timeout)
        self.start()
        return self.wait_running(BOOT_DEADLINE)

    def destroy(self) -> None:
        """Kills the machine and removes its root copy."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- network faults ----------------------------------------------------------------

    def cut_network(self) -> None:
        """Takes the machine's link down: it can reach nobody and nobody can reach it."""
        network.set_link(self.veth, up=False)

    def heal_network(self) -> None:
        network.set_link(self.veth, up=True)

    # -- working inside ----------------------------------------------------------------

    def _require_init(self) -> int:
        if self.init_pid is None or not pid_alive(self.init_pid):
            raise MachineError(f"{self.name} is not running")
        return self.init_pid

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float | None = 120.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``argv`` inside the machine (all namespaces) and returns its result."""
        pid = self._require_init()
        base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        base_env.update(env or {})
        cmd = ["nsenter", "-t", str(pid), "-a", "--", "env", "-i",
               *(f"{k}={v}" for k, v in base_env.items()), *argv]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise MachineError(
                f"{self.name}: {' '.join(argv)} exited {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
            )
        return result

    def run_host_program(
        self, argv: Sequence[str], *, timeout: float | None = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs a host program (e.g. the host's venv python) inside the machine's PID
        namespace only. Services that identify callers by PID (logind) then see a real
        process of the machine, while the program keeps the host's files."""
        pid = self._require_init()
        cmd = ["nsenter", "-t", str(pid), "-p", "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def path(self, inside: str) -> Path:
        """The host path of ``inside`` as the running machine sees it (tmpfs mounts too)."""
        return Path(f"/proc/{self._require_init()}/root") / inside.lstrip("/")

    def copy_in(self, source: Path | str, dest: str, mode: int | None = None) -> None:
        """Copies a host file or folder into the running machine at ``dest``."""
        source = Path(source)
        target = self.path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(source, target)
            if mode is not None:
                target.chmod(mode)

    def write_file(self, dest: str, text: str, mode: int = 0o644) -> None:
        target = self.path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def install_deb(self, package: Path) -> None:
        """Installs a .deb with apt, as an operator would (dependencies from the machine)."""
        self.copy_in(package, f"/root/{package.name}")
        self.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", f"/root/{package.name}"],
            env={"DEBIAN_FRONTEND": "noninteractive"},
            timeout=300,
        )

    def bus_address(self) -> str:
        """D-Bus address of the machine's system bus, usable from the host as root."""
        return f"unix:path=/proc/{self._require_init()}/root/run/dbus/system_bus_socket"

    def journal(self, lines: int | None = 300, unit: str | None = None) -> str:
        """The machine's journal (from inside when running, from its files otherwise)."""
        args = ["journalctl", "--no-pager", "-o", "short-monotonic"]
        if lines is not None:
            args += ["-n", str(lines)]
        if unit:
            args += ["-u", unit]
        if self.init_pid is not None and pid_alive(self.init_pid):
            return self.run(args, check=False).stdout
        journal_dir = self.root / "var/log/journal"
        if not journal_dir.exists():
            return ""
        result = subprocess.run([*args, "-D", str(journal_dir)], capture_output=True, text=True)
        return result.stdout

    def console_log(self) -> str:
        logs = sorted(self.dir.glob("console-*.log"))
        return logs[-1].read_text(errors="replace") if logs else ""
