"""Gives each machine launcher a cgroup of its own before it becomes systemd-nspawn.

systemd-nspawn started with ``--keep-unit`` makes the cgroup it was started in the
container's root cgroup. Two launchers in one cgroup would share (and fight over) one tree,
so every machine gets a fresh child of the launcher's cgroup in each hierarchy systemd
manages: the unified (v2) tree and, on hybrid hosts, the named ``systemd`` v1 tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def _managed_hierarchies() -> list[tuple[Path, str]]:
    """(mount point, this process's path in it) for the hierarchies systemd uses."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hier_id, controllers, path = line.split(":", 2)
        own["unified" if hier_id == "0" else controllers] = path
    found: list[tuple[Path, str]] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mountpoint, fstype, options, *_ = line.split()
        if fstype == "cgroup2" and "unified" in own:
            found.append((Path(mountpoint), own["unified"]))
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            found.append((Path(mountpoint), own.get("name=systemd", "/")))
    return found


def create(name: str) -> list[Path]:
    """Creates the cgroup ``name`` below this process's cgroup in every managed hierarchy."""
    made: list[Path] = []
    for mountpoint, own_path in _managed_hierarchies():
        path = mountpoint / own_path.lstrip("/") / name
        path.mkdir(parents=True, exist_ok=True)
        made.append(path)
    return made


def enter(paths: list[Path]) -> None:
    """Moves the calling process into ``paths`` (runs in the child before exec)."""
    pid = str(os.getpid()).encode()
    for path in paths:
        fd = os.open(path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def remove(paths: list[Path]) -> None:
    """Removes the cgroups, deepest first; the container's systemd nests its own inside."""
    for top in paths:
        if not top.exists():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def pids(paths: list[Path]) -> set[int]:
    """Every process still inside the cgroups, at any depth."""
    found: set[int] = set()
    for top in paths:
        if not top.exists():
            continue
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    text = Path(dirpath, "cgroup.procs").read_text()
                except OSError:
                    continue
                found.update(int(p) for p in text.split())
    return found


def kill_all(paths: list[Path]) -> None:
    """SIGKILLs every process left in the cgroups: the remains of a container."""
    for pid in pids(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
