"""Atomic, durable file writes, batched so a run pays for one sync, not one per file.

A file is never visible half-written: its bytes, mode and owner go to a temp file in the
destination's directory, and only a ``rename()`` makes it the real file. Durability is the
expensive part. One ``fsync`` per file makes the filesystem commit its journal once per
file; a cloud-config with 40 files then spends most of its time waiting on the disk.
:class:`StagedWrites` therefore works in three passes:

1. write every file to its temp name (nothing visible yet);
2. make all temp files durable at once: one ``syncfs(2)`` per filesystem touched, or an
   ``fsync`` per temp file where ``syncfs`` is not available. syncfs also writes out
   whatever other programs left dirty on that filesystem; at boot, where this runs, that
   is little, and one journal commit for everything beats one per file;
3. rename each temp file into place, in the order they were staged, then ``fsync`` each
   directory that changed, so the renames themselves survive a crash.

After a crash between passes, the old files are intact and at most some ``.cloudinit-temp*``
files are left behind; the next run writes the files again because they still differ.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

TEMP_PREFIX = ".cloudinit-temp"


def ensure_parent(path: Path) -> list[Path]:
    """Create missing parent directories with mode 0755 (they never take the file's mode).

    Returns the directories created, outermost first, so the caller can sync the
    directories that gained an entry."""
    parent = path.parent
    if parent.is_dir():
        return []
    missing: list[Path] = []
    probe = parent
    while not probe.is_dir():
        if probe.exists() or probe.is_symlink():
            raise NotADirectoryError(f"{probe} exists and is not a directory")
        missing.append(probe)
        probe = probe.parent
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    return missing[::-1]


@functools.cache
def _syncfs_function():  # type: ignore[no-untyped-def]
    """libc's syncfs, or None. Python 3.11's os module has no syncfs; ctypes reaches it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def sync_filesystem(fd: int) -> bool:
    """syncfs(2) on the filesystem holding ``fd``; False if the call is unavailable or
    failed, in which case the caller falls back to fsync."""
    function = _syncfs_function()
    return function is not None and function(fd) == 0


def sync_dirs(directories: set[Path] | list[Path]) -> None:
    for directory in sorted(set(directories)):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_temp(directory: Path) -> tuple[int, Path]:
    """A new private file beside the destination (O_EXCL, mode 0600 until chmod)."""
    for _ in range(100):
        temp = directory / f"{TEMP_PREFIX}{os.urandom(6).hex()}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           0o600), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name in {directory}")


class _Staged:
    __slots__ = ("dest", "fd", "temp")

    def __init__(self, temp: Path, dest: Path, fd: int = -1) -> None:
        self.temp = temp
        self.dest = dest
        self.fd = fd  # open until the sync pass, for fsync and to find the filesystem


class StagedWrites:
    """Files and symlinks waiting for :meth:`commit`. See the module docstring.

    ``use_syncfs=False`` forces one fsync per file (the fallback path, and what the tests
    use to check both paths give the same result). ``syncs`` counts the sync calls made
    (syncfs, fsync of a file or a directory)."""

    def __init__(self, use_syncfs: bool = True) -> None:
        self.use_syncfs = use_syncfs
        self.staged: list[_Staged] = []
        self.dirty_dirs: set[Path] = set()
        self.removed: list[Path] = []
        self.syncs = 0
        self.commits = 0  # commits that had something to do
        self.commit_seconds = 0.0  # time spent in commit: mostly waiting for the disk

    def __len__(self) -> int:
        return len(self.staged) + len(self.removed)

    def _made_dirs(self, created: list[Path]) -> None:
        for directory in created:
            self.dirty_dirs.add(directory.parent)
            self.dirty_dirs.add(directory)

    def write(self, path: Path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
        """Write ``data`` to a temp file beside ``path`` with its final mode and owner."""
        self._made_dirs(ensure_parent(path))
        fd, tmp = _create_temp(path.parent)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.staged.append(_Staged(tmp, path, fd))

    def symlink(self, path: Path, target: str) -> None:
        """Point ``path`` at ``target`` at commit, replacing whatever is there."""
        self._made_dirs(ensure_parent(path))
        tmp = path.with_name(f"{TEMP_PREFIX}-link-{os.getpid()}-{path.name}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        self.staged.append(_Staged(tmp, path))

    def remove(self, path: Path) -> None:
        """Unlink ``path`` at commit (after the staged files are in place)."""
        self.removed.append(path)

    def _sync_temps(self) -> None:
        done_devices: set[int] = set()
        for entry in self.staged:
            if entry.fd == -1:
                continue  # a symlink: its rename is covered by the directory sync
            if self.use_syncfs:
                device = os.fstat(entry.fd).st_dev
                if device in done_devices:
                    continue
                if sync_filesystem(entry.fd):
                    done_devices.add(device)
                    self.syncs += 1
                    continue
                self.use_syncfs = False
            os.fsync(entry.fd)
            self.syncs += 1

    def _close_all(self) -> None:
        for entry in self.staged:
            if entry.fd != -1:
                with contextlib.suppress(OSError):
                    os.close(entry.fd)
                entry.fd = -1

    def commit(self) -> None:
        """Make every staged write durable and visible, in staging order."""
        if not self.staged and not self.removed and not self.dirty_dirs:
            return
        started = time.perf_counter()
        self.commits += 1
        try:
            self._commit()
        finally:
            self.commit_seconds += time.perf_counter() - started

    def _commit(self) -> None:
        try:
            self._sync_temps()
        except BaseException:
            self.discard()
            raise
        self._close_all()
        staged, self.staged = self.staged, []
        for entry in staged:
            os.replace(entry.temp, entry.dest)
            self.dirty_dirs.add(entry.dest.parent)
        removed, self.removed = self.removed, []
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.dirty_dirs.add(path.parent)
        dirty, self.dirty_dirs = self.dirty_dirs, set()
        sync_dirs(dirty)
        self.syncs += len(dirty)

    def discard(self) -> None:
        """Drop everything staged; the destinations are left as they were."""
        self._close_all()
        for entry in self.staged:
            with contextlib.suppress(FileNotFoundError):
                entry.temp.unlink()
        self.staged, self.removed = [], []
        self.dirty_dirs = set()


def atomic_write(path: Path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """One file, durable and in place when this returns."""
    batch = StagedWrites(use_syncfs=False)
    batch.write(path, data, mode, uid, gid)
    batch.commit()


def atomic_symlink(path: Path, target: str) -> None:
    """Point ``path`` at ``target``, replacing whatever is there (file or link)."""
    batch = StagedWrites(use_syncfs=False)
    batch.symlink(path, target)
    batch.commit()
