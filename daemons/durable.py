"""Durable, atomic file writes: the one way every Flotilla program replaces a file.

A reader of the destination sees the old file or the new one, never a mix, and after a
crash the file is the old one or the new one in full. That takes four steps, in order:

1. write the bytes to a fresh temp file in the destination's own directory (a rename is
   atomic only within one filesystem), created ``O_EXCL | O_NOFOLLOW`` with mode 0600 so
   nobody reads it early and a planted link cannot redirect it;
2. set the final mode and owner on the temp file, so the file never appears with the
   wrong permissions, not even for an instant;
3. ``fsync`` the temp file, then ``rename()`` it over the destination;
4. ``fsync`` the directory, so the rename itself survives a crash.

When a step fails, the temp file is removed and the destination is left as it was.

``root`` confines a write to a directory tree, for paths that come from configs
(cloud-config ``write_files``, Ignition ``storage.files``): the directory the file lands in,
with every symlink on the way resolved, must lie under ``root``, otherwise
:class:`EscapeError` is raised before anything is written. The last component may be a
link: the rename replaces the link, it never writes through it.

Durability costs one journal commit per ``fsync``. :class:`StagedWrites` batches many files
so a run pays for one ``syncfs(2)`` per filesystem instead. ``sync=False`` on
:func:`write_atomic` keeps the atomicity and drops both fsyncs, for callers that sync the
whole filesystem themselves at the end of a stage (Ignition's files stage, which is rerun
whole if it dies) and for runtime state that is rebuilt at start (fleet's unit files
under /run).

The raft WAL segments and snapshot files still have their own copy of these steps
(``raft/wal.py`` ``_create_segment`` and ``fsync_dir``, ``raft/storage.py``
``_write_snapshot_file``); its sweep of leftover ``*.tmp`` files would have to learn
:data:`TEMP_PREFIX` when they move here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from typing import Any

#: Temp files start with this; what a crash leaves behind is easy to find and sweep.
TEMP_PREFIX = ".flotilla-tmp-"

StrPath = str | os.PathLike[str]


class EscapeError(ValueError):
    """A path would land outside the root it is confined to."""


def fsync_dir(path: StrPath) -> None:
    """Make the directory's entries (a rename, a new or removed name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _real_dir(path: StrPath) -> str:
    """The directory's real path as the kernel resolved it (three system calls, where
    ``os.path.realpath`` makes one per component); a missing one the slow way."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _inside(real_root: str, real: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def confine(path: StrPath, root: StrPath) -> Path:
    """``path`` (relative paths are taken under ``root``) if its directory is inside ``root``.

    The parent is resolved with every symlink followed, as the kernel would on ``open``; a
    parent that does not exist yet is resolved as far as it exists, the missing rest being
    plain names. ``..`` and ``.`` as the last component are refused: they name no file."""
    root_real = _real_dir(root)
    joined = Path(root_real, path) if not os.path.isabs(path) else Path(path)
    if joined.name in ("", ".", ".."):
        raise EscapeError(f"{path}: not a file name")
    parent_real = _real_dir(joined.parent)
    if not _inside(root_real, parent_real):
        raise EscapeError(f"{path} escapes {root}")
    return Path(parent_real, joined.name)


def ensure_parent(path: Path, mode: int = 0o755) -> list[Path]:
    """Create the missing parent directories of ``path`` with ``mode`` (never the file's).

    Returns the directories created, outermost first, so a caller can sync the
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
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, mode)
    return missing[::-1]


@functools.cache
def _syncfs_function() -> Any:
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
        fsync_dir(directory)


def _create_temp(directory: Path) -> tuple[int, Path]:
    """A new private file beside the destination (O_EXCL, O_NOFOLLOW, 0600 until fchmod)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temp = directory / f"{TEMP_PREFIX}{os.urandom(6).hex()}"
        try:
            return os.open(temp, flags, 0o600), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name in {directory}")


def _fill(fd: int, data: bytes, mode: int, uid: int, gid: int) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)  # after fchown, which may clear set-id bits


def _discard_temp(fd: int, temp: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


class _Staged:
    __slots__ = ("dest", "fd", "temp")

    def __init__(self, temp: Path, dest: Path, fd: int = -1) -> None:
        self.temp = temp
        self.dest = dest
        self.fd = fd  # open until the sync pass, for fsync and to find the filesystem


class StagedWrites:
    """Files and symlinks written now, made durable and visible together by :meth:`commit`.

    Three passes, so a batch of many files pays for one sync per filesystem: every file
    goes to its temp name (nothing visible yet); all temp files are made durable at once
    (``syncfs`` per filesystem, or ``fsync`` per file where syncfs is unavailable); then
    each is renamed into place in staging order and every changed directory is synced.
    After a crash between passes the old files are intact and at most some temp files
    are left behind.

    ``use_syncfs=False`` forces one fsync per file (the fallback path, and what the tests
    use to check both paths give the same result). ``syncs`` counts the sync calls made
    (syncfs, fsync of a file or a directory). ``root`` confines every path to that tree."""

    def __init__(self, use_syncfs: bool = True, root: StrPath | None = None) -> None:
        self.use_syncfs = use_syncfs
        self.root = root
        self.staged: list[_Staged] = []
        self.dirty_dirs: set[Path] = set()
        self.removed: list[Path] = []
        self.syncs = 0
        self.commits = 0  # commits that had something to do
        self.commit_seconds = 0.0  # time spent in commit: mostly waiting for the disk

    def __len__(self) -> int:
        return len(self.staged) + len(self.removed)

    def _place(self, path: StrPath) -> Path:
        """The destination, confined when there is a root, its parents created 0755."""
        dest = Path(path) if self.root is None else confine(path, self.root)
        for directory in ensure_parent(dest):
            self.dirty_dirs.add(directory.parent)
            self.dirty_dirs.add(directory)
        if self.root is not None:
            dest = confine(dest, self.root)  # a directory made meanwhile may be a link
        return dest

    def write(self, path: StrPath, data: bytes, mode: int = 0o644, uid: int = -1,
              gid: int = -1) -> None:
        """Write ``data`` to a temp file beside ``path`` with its final mode and owner."""
        dest = self._place(path)
        fd, temp = _create_temp(dest.parent)
        try:
            _fill(fd, data, mode, uid, gid)
        except BaseException:
            _discard_temp(fd, temp)
            raise
        self.staged.append(_Staged(temp, dest, fd))

    def symlink(self, path: StrPath, target: str) -> None:
        """Point ``path`` at ``target`` at commit, replacing whatever is there."""
        dest = self._place(path)
        temp = dest.with_name(f"{TEMP_PREFIX}link-{os.getpid()}-{dest.name}")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        os.symlink(target, temp)
        self.staged.append(_Staged(temp, dest))

    def remove(self, path: StrPath) -> None:
        """Unlink ``path`` at commit (after the staged files are in place)."""
        self.removed.append(Path(path) if self.root is None else confine(path, self.root))

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


def write_atomic(path: StrPath, data: bytes | str, *, mode: int = 0o644, uid: int = -1,
                 gid: int = -1, root: StrPath | None = None, sync: bool = True,
                 make_parents: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically; durable when this returns.

    ``str`` data is written as UTF-8. Missing parents are created 0755 unless
    ``make_parents`` is false. ``sync=False`` skips both fsyncs (the caller syncs the
    filesystem later); the write is still atomic for readers. Returns the path written
    (under ``root``, with the parent's links resolved).

    The directory is opened once and the temp file, the rename and the directory sync
    all go through that descriptor, so the directory checked against ``root`` is the one
    written in, even if a link on the way is swapped meanwhile."""
    payload = data.encode() if isinstance(data, str) else data
    dest = Path(path)
    if root is not None and (not os.path.isabs(path) or not dest.parent.is_dir()):
        dest = confine(path, root)  # a relative or missing parent: checked before mkdir
    if dest.name in ("", ".", ".."):
        raise EscapeError(f"{path}: not a file name")
    created = ensure_parent(dest) if make_parents else []
    dir_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if root is not None:
            real_parent = os.readlink(f"/proc/self/fd/{dir_fd}")
            if not _inside(_real_dir(root), real_parent):
                raise EscapeError(f"{path} escapes {root}")
            dest = Path(real_parent, dest.name)
        _write_in(dir_fd, dest.name, payload, mode, uid, gid, sync)
        if sync:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    if sync and created:
        sync_dirs([d.parent for d in created])
    return dest


def _write_in(dir_fd: int, name: str, data: bytes, mode: int, uid: int, gid: int,
              sync: bool) -> None:
    """Temp file in the open directory, filled, synced, renamed onto ``name``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temp = f"{TEMP_PREFIX}{os.urandom(6).hex()}"
        try:
            fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temp name beside {name}")
    try:
        _fill(fd, data, mode, uid, gid)
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if fd != -1:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
