"""Atomic file writes: temp file in the same directory, mode and owner, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def ensure_parent(path: Path) -> None:
    """Create missing parent directories with mode 0755 (they never take the file's mode)."""
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists() or parent.is_symlink():
        raise NotADirectoryError(f"{parent} exists and is not a directory")
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)


def atomic_write(path: Path, data: bytes, mode: int, uid: int = -1, gid: int = -1,
                 dirty_dirs: set[Path] | None = None) -> None:
    """Write via temp+fsync+rename. The directory entry is synced now, or, when
    ``dirty_dirs`` is given, recorded there so a batch of writes syncs each directory once
    (see :func:`sync_dirs`)."""
    ensure_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=".cloudinit-temp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
            if uid != -1 or gid != -1:
                os.fchown(handle.fileno(), uid, gid)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if dirty_dirs is not None:
        dirty_dirs.add(path.parent)
    else:
        sync_dirs({path.parent})


def sync_dirs(directories: set[Path]) -> None:
    for directory in sorted(directories):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_symlink(path: Path, target: str) -> None:
    """Point ``path`` at ``target``, replacing whatever is there (file or link)."""
    ensure_parent(path)
    tmp = path.with_name(f".cloudinit-link-{os.getpid()}-{path.name}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)
