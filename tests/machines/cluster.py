"""A set of test machines on one private bridge, torn down whatever happens.

A :class:`Cluster` owns a run folder under ``.cache/machines/<run>`` recording the PID of
the process that made it. Every new cluster first sweeps runs whose owner is gone (a test
run that was killed outright): their launchers are killed, their links deleted and their
folders removed, so an interrupted run never leaves machines or bridges behind for long.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import cgroups, network, rootfs
from .abboot import unmount
from .machine import Machine, MachineError, pid_alive

RUNS_DIR = rootfs.CACHE_DIR / "machines"


def _is_our_launcher(pid: int, run_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"systemd-nspawn") and any(
        str(run_dir).encode() in arg for arg in cmdline
    )


def sweep_stale_runs() -> list[str]:
    """Removes machines, links and folders of runs whose owning process has exited."""
    swept: list[str] = []
    if not RUNS_DIR.exists():
        return swept
    for run_dir in RUNS_DIR.iterdir():
        owner_file = run_dir / "owner.pid"
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            owner = -1
        if owner > 0 and pid_alive(owner):
            continue
        bridge_file = run_dir / "bridge"
        for machine_dir in run_dir.iterdir():
            pid_file = machine_dir / "launcher.pid"
            if pid_file.exists():
                try:
                    pid = int(pid_file.read_text())
                except ValueError:
                    pid = -1
                if pid > 0 and _is_our_launcher(pid, run_dir):
                    os.kill(pid, signal.SIGKILL)
                name = machine_dir.name
                paths = cgroups.create(f"flotilla-{name}")
                cgroups.kill_all(paths)
                cgroups.remove(paths)
                network.delete_link(f"vb-{name}")
                unmount(machine_dir)  # an A/B machine's /usr mount and loop device
        if bridge_file.exists():
            network.delete_link(bridge_file.read_text().strip())
        shutil.rmtree(run_dir, ignore_errors=True)
        swept.append(run_dir.name)
    return swept


class Cluster:
    """N machines booted from the cached root, reachable from each other and the host."""

    def __init__(
        self,
        count: int,
        *,
        prefix: str = "m",
        recipe: rootfs.Recipe | None = None,
        machine_class: type[Machine] = Machine,
    ):
        if count < 1:
            raise ValueError("a cluster needs at least one machine")
        sweep_stale_runs()
        self.template = rootfs.ensure_rootfs(recipe)
        self.run_id = secrets.token_hex(3)
        self.run_dir = RUNS_DIR / self.run_id
        self.run_dir.mkdir(parents=True)
        (self.run_dir / "owner.pid").write_text(str(os.getpid()))
        self.bridge: network.Bridge | None = None
        self.machines: list[Machine] = []
        atexit.register(self.destroy)
        try:
            bridge_name = f"flt-{self.run_id}"
            (self.run_dir / "bridge").write_text(bridge_name)
            self.bridge = network.Bridge(bridge_name)
            names = [f"{prefix}{self.run_id}{i}" for i in range(1, count + 1)]
            addresses = {name: self.bridge.next_address() for name in names}
            hosts = {name: str(addr) for name, addr in addresses.items()}
            self.machines = [
                machine_class(name, self.template, self.run_dir, self.bridge, addresses[name],
                              hosts)
                for name in names
            ]
        except BaseException:
            self.destroy()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def __getitem__(self, index: int) -> Machine:
        return self.machines[index]

    def __iter__(self):
        return iter(self.machines)

    def __len__(self) -> int:
        return len(self.machines)

    def boot(self, timeout: float = 120.0) -> None:
        """Starts every machine at once and waits until each has finished booting."""
        with ThreadPoolExecutor(max_workers=len(self.machines)) as pool:
            list(pool.map(lambda m: m.prepare(), self.machines))
        for machine in self.machines:
            machine.start()
        with ThreadPoolExecutor(max_workers=len(self.machines)) as pool:
            list(pool.map(lambda m: m.wait_running(timeout), self.machines))

    def destroy(self) -> None:
        """Kills every machine and removes the bridge and the run folder. Idempotent."""
        errors: list[BaseException] = []
        for machine in self.machines:
            try:
                machine.kill()
            except (MachineError, OSError, subprocess.SubprocessError) as exc:
                errors.append(exc)
            unmount(machine.dir)
        if self.bridge is not None:
            self.bridge.delete()
            self.bridge = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
        atexit.unregister(self.destroy)
        if errors:
            raise MachineError(f"teardown left errors: {errors}")
