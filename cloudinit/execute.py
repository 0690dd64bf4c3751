"""The executor: gathers the machine's state for the planner and applies the steps.

All paths in actions are machine paths (``/etc/hosts``); they are resolved under the
host's root, so the same code applies a config to the running system or to an image.
systemd and hostnamed are reached only through the protocols in ``systemd_api``; users are
created with ``useradd``/``usermod`` (``--prefix`` when the root is not ``/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.daemons.durable import StagedWrites, ensure_parent

from . import plan
from .accounts import Accounts
from .systemd_api import HostnameControl, SystemdControl


class ApplyError(RuntimeError):
    """A step failed while applying; later steps were not attempted."""


@dataclass
class Host:
    root: Path
    systemd: SystemdControl
    hostnamed: HostnameControl
    run: Callable[[list[str]], None] = field(default=lambda argv: _run(argv))
    systemd_seconds: float = 0.0
    tool_seconds: float = 0.0
    writes: StagedWrites = field(default_factory=lambda: StagedWrites())

    def __post_init__(self) -> None:
        # Paths come from the config: when applying to an image, a ``..`` or a link in
        # it must not lead out of the image onto the host that runs us.
        if self.root != Path("/") and self.writes.root is None:
            self.writes.root = self.root

    def path(self, machine_path: str) -> Path:
        return self.root / machine_path.lstrip("/")

    def tool_args(self) -> list[str]:
        """useradd/usermod work on the root's account files through ``--prefix``."""
        return [] if self.root == Path("/") else ["--prefix", str(self.root)]


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shown = [a if not a.startswith("$") else "<hash>" for a in argv]
        raise ApplyError(f"{' '.join(shown)} failed ({result.returncode}): "
                         f"{result.stderr.strip()}")


def _file_state(path: Path) -> plan.FileState:
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return plan.MISSING
    if stat.S_ISLNK(st.st_mode):
        return plan.FileState("symlink", target=os.readlink(path))
    if stat.S_ISCHR(st.st_mode):
        return plan.FileState("chardev")
    if stat.S_ISDIR(st.st_mode):
        return plan.FileState("dir")
    if not stat.S_ISREG(st.st_mode):
        return plan.FileState("other")
    return plan.FileState("file", path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid,
                          st.st_gid)


async def observe(actions: list[plan.Action], host: Host) -> plan.Observed:
    """Read everything the reconciler compares against.

    The questions for systemd and hostnamed are sent first, all at once (one connection
    carries them without waiting for each other's answers); the files and accounts are
    read while the answers are on their way."""
    observed = plan.Observed()
    started = time.perf_counter()
    names = plan.units_to_observe(actions)
    units = asyncio.gather(*(host.systemd.unit_state(name) for name in names))
    hostname = None
    if any(isinstance(a, plan.SetHostname | plan.EtcHosts) for a in actions):
        hostname = asyncio.ensure_future(host.hostnamed.static_hostname())
    await asyncio.sleep(0)  # let the requests go out before the local reading
    host.systemd_seconds += time.perf_counter() - started
    try:
        _observe_local(actions, host, observed)
    except BaseException:
        units.cancel()
        if hostname is not None:
            hostname.cancel()
        raise
    started = time.perf_counter()
    if hostname is not None:
        observed.hostname = await hostname
    states = await units
    for name, (load, active, file_state) in zip(names, states, strict=True):
        observed.units[name] = plan.UnitState(load, active, file_state)
    host.systemd_seconds += time.perf_counter() - started
    return observed


def _observe_local(actions: list[plan.Action], host: Host, observed: plan.Observed) -> None:
    """Files, accounts, SSH keys and file owners under the host's root."""
    accounts = Accounts(host.root)
    for path in plan.files_to_observe(actions):
        observed.files[path] = _file_state(host.path(path))
    for name in plan.users_to_observe(actions):
        account = accounts.users.get(name)
        if account is None:
            continue
        observed.users[name] = plan.UserState(name, account.uid, account.gid, account.home,
                                              accounts.hashes.get(name, ""))
        key_dir = host.path(plan.key_dir(account.home))
        keys: dict[str, bytes] = {}
        if key_dir.is_dir():
            for entry in sorted(key_dir.iterdir()):
                if entry.is_file():
                    keys[entry.name] = entry.read_bytes()
        observed.key_dirs[name] = keys
        merged = posixpath.join(account.home, ".ssh", "authorized_keys")
        observed.files[merged] = _file_state(host.path(merged))
    for owner in plan.owners_to_observe(actions):
        observed.owners[owner] = accounts.resolve_owner(owner)


# File steps (keys, files, units, masks) are staged in ``host.writes`` and made durable
# together. The steps below may read what they wrote (systemd reads units, hostnamed
# /etc/hostname), so the staged files are committed before one of them runs. useradd reads
# none of the files a config writes (those come after the users in the original's order),
# so staging continues across it.
_NEEDS_FILES = (plan.SetHostname, plan.DaemonReload, plan.UnitCommand)


async def apply(steps: list[plan.Step], host: Host,
                report: Callable[[str], None] = lambda line: None) -> int:
    """Apply the changing steps in order; returns how many changed. Stops at the first
    failure with ApplyError naming the step; the files of the steps before it are still
    put in place, so the machine matches the steps reported as done.

    Enabling a unit only reads unit files, so the enables of a run wait until the next
    daemon-reload or unit command and then run together, in order, after one commit of
    every unit file staged so far; enables interleaved with unit writes would otherwise
    cost a filesystem sync each. Each is reported when it runs."""
    changed = 0
    enables: list[plan.Step] = []
    try:
        for step in steps:
            if not step.change:
                report(step.describe())
                continue
            if isinstance(step.action, plan.EnableUnit):
                enables.append(step)
                continue
            if isinstance(step.action, _NEEDS_FILES):
                changed += await _run_enables(enables, host, report)
            report(step.describe())
            await _apply_step(step, host)
            changed += 1
        changed += await _run_enables(enables, host, report)
    except BaseException:
        with contextlib.suppress(ApplyError):
            _commit(host)
        raise
    _commit(host)
    return changed


async def _apply_step(step: plan.Step, host: Host) -> None:
    try:
        await _apply_one(step, host)
    except ApplyError:
        raise
    except Exception as err:  # every failure is reported against its step
        raise ApplyError(f"{step.action.describe()}: {err}") from err


async def _run_enables(enables: list[plan.Step], host: Host,
                       report: Callable[[str], None]) -> int:
    """Commit the staged files, then run the queued enables in order; empties the queue."""
    _commit(host)
    done = 0
    while enables:
        step = enables.pop(0)
        report(step.describe())
        await _apply_step(step, host)
        done += 1
    return done


def _commit(host: Host) -> None:
    try:
        host.writes.commit()
    except OSError as err:
        raise ApplyError(f"putting the written files in place: {err}") from err


async def _timed_systemd(host: Host, call) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    try:
        await call
    finally:
        host.systemd_seconds += time.perf_counter() - started


async def _apply_one(step: plan.Step, host: Host) -> None:
    a = step.action
    if isinstance(a, plan.SetHostname):
        await _timed_systemd(host, host.hostnamed.set_static_hostname(a.hostname))
    elif isinstance(a, plan.EnsureUser):
        started = time.perf_counter()
        try:
            if step.argv:
                host.run(["useradd", *host.tool_args(), *step.argv])
            else:
                host.run(["usermod", *host.tool_args(), "--password", a.user.passwd,
                          a.user.name])
        finally:
            host.tool_seconds += time.perf_counter() - started
    elif isinstance(a, plan.InstallKeys):
        _install_keys(a, step.payload, host)
    elif isinstance(a, plan.WriteFile):
        owner = Accounts(host.root).resolve_owner(a.owner) if a.owner else (-1, -1)
        if owner is None:
            raise ApplyError(f'owner "{a.owner}" does not exist')
        host.writes.write(host.path(a.path), step.payload, a.mode, *owner)
    elif isinstance(a, plan.EtcHosts | plan.MergeEnvFile | plan.WriteUnitFile):
        host.writes.write(host.path(a.path), step.payload, 0o644)
    elif isinstance(a, plan.MaskUnit):
        host.writes.symlink(host.path(a.path), "/dev/null")
    elif isinstance(a, plan.UnmaskUnit):
        host.writes.remove(host.path(a.path))
    elif isinstance(a, plan.EnableUnit):
        await _timed_systemd(host, host.systemd.enable_unit_files([a.unit], a.runtime))
    elif isinstance(a, plan.DaemonReload):
        await _timed_systemd(host, host.systemd.daemon_reload())
    elif isinstance(a, plan.UnitCommand):
        await _timed_systemd(host, host.systemd.unit_command(a.unit, a.command))


def _install_keys(a: plan.InstallKeys, merged: bytes, host: Host) -> None:
    account = Accounts(host.root).users.get(a.user)
    if account is None:
        raise ApplyError(f'user "{a.user}" does not exist')
    ssh_dir = host.path(posixpath.join(account.home, ".ssh"))
    key_dir = ssh_dir / "authorized_keys.d"
    for directory in (ssh_dir, key_dir):
        for made in ensure_parent(directory / "x"):
            host.writes.dirty_dirs.add(made.parent)
        os.chmod(directory, 0o700)
        os.chown(directory, account.uid, account.gid)
    merged_path = ssh_dir / "authorized_keys"
    writes = host.writes
    if merged_path.is_file() and not (key_dir / plan.OLD_KEYS).exists():
        old = merged_path.read_bytes()
        if old and not old.startswith(plan.KEYS_HEADER.encode()):
            writes.write(key_dir / plan.OLD_KEYS, old, 0o600, account.uid, account.gid)
    writes.write(key_dir / a.key_name, a.content, 0o600, account.uid, account.gid)
    writes.write(ssh_dir / "authorized_keys", merged, 0o600, account.uid, account.gid)
