"""The one durable-file writer: crash-safe shape, mode and owner, confinement to a root.

The shape is checked at the moment of the rename (the only step that makes the new file
visible): the destination still holds the old bytes, the temp file beside it holds all
of the new ones with the final mode and owner, and it has been fsynced; the directory
is fsynced after. Failures are real ones: a full filesystem (a 64 KiB tmpfs), a rename
onto a directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flotilla.daemons import durable


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.startswith(durable.TEMP_PREFIX)]


@contextlib.contextmanager
def _tiny_tmpfs(where: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem, so a large write fails with ENOSPC midway."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


class _Recorder:
    """Wraps os.fsync and os.replace (they still run) to record the order of the steps
    and what the destination and the temp file hold when the rename happens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
        self.dest = dest
        self.steps: list[tuple[str, str]] = []
        self.at_rename: dict[str, object] = {}
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                    src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
            src_path, dst_path = Path(src), Path(dst)
            if src_dir_fd is not None:
                src_path = Path(os.readlink(f"/proc/self/fd/{src_dir_fd}"), src)
            if dst_dir_fd is not None:
                dst_path = Path(os.readlink(f"/proc/self/fd/{dst_dir_fd}"), dst)
            info = os.stat(src_path)
            self.at_rename = {
                "dest": dst_path.read_bytes() if dst_path.exists() else None,
                "temp": src_path.read_bytes(),
                "temp_dir": src_path.parent,
                "mode": info.st_mode & 0o7777,
                "owner": (info.st_uid, info.st_gid),
            }
            self.steps.append(("replace", str(dst_path)))
            real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        monkeypatch.setattr(durable.os, "fsync", fsync)
        monkeypatch.setattr(durable.os, "replace", replace)


@pytest.mark.unit
def test_new_bytes_appear_only_whole_and_in_order(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "member.json"
    dest.write_bytes(b"old contents")
    rec = _Recorder(monkeypatch, dest)
    new = b"n" * 300_000
    durable.write_atomic(dest, new, mode=0o640, uid=1234, gid=4321)
    assert rec.at_rename["dest"] == b"old contents"  # not visible before the rename
    assert rec.at_rename["temp"] == new  # whole before the rename
    assert rec.at_rename["temp_dir"] == tmp_path  # same directory: rename is atomic
    assert rec.at_rename["mode"] == 0o640  # mode and owner before the rename
    assert rec.at_rename["owner"] == (1234, 4321)
    kinds = [kind for kind, _ in rec.steps]
    assert kinds == ["fsync", "replace", "fsync"]
    assert Path(rec.steps[0][1]).name.startswith(durable.TEMP_PREFIX)  # the temp file
    assert rec.steps[2][1] == str(tmp_path)  # then the directory
    assert dest.read_bytes() == new
    assert _temps(tmp_path) == []


@pytest.mark.unit
def test_created_parents_are_synced_too(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _Recorder(monkeypatch, tmp_path / "a/b/f")
    durable.write_atomic(tmp_path / "a/b/f", "text")
    synced = {path for kind, path in rec.steps if kind == "fsync"}
    assert {str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a/b")} <= synced
    assert (tmp_path / "a/b").stat().st_mode & 0o777 == 0o755 & ~_umask()
    assert (tmp_path / "a/b/f").read_text() == "text"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.unit
def test_old_file_intact_when_the_disk_fills(tmp_path: Path) -> None:
    with _tiny_tmpfs(tmp_path / "fs") as fs:
        dest = fs / "state"
        dest.write_bytes(b"old")
        with pytest.raises(OSError) as caught:
            durable.write_atomic(dest, b"x" * 1_000_000)
        assert caught.value.errno == 28  # ENOSPC, midway through the bytes
        assert dest.read_bytes() == b"old"
        assert _temps(fs) == []


@pytest.mark.unit
def test_failed_rename_leaves_destination_and_no_temp(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "inside").write_bytes(b"keep")
    with pytest.raises(IsADirectoryError):
        durable.write_atomic(tmp_path / "busy", b"new")
    assert (tmp_path / "busy" / "inside").read_bytes() == b"keep"
    assert _temps(tmp_path) == []


@pytest.mark.unit
def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        durable.write_atomic(tmp_path / "f", b"x", mode=0o644)
        durable.write_atomic(tmp_path / "g", b"x", mode=0o4755)
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o7777 == 0o644
    assert (tmp_path / "g").stat().st_mode & 0o7777 == 0o4755  # set-uid survives fchown


@pytest.mark.unit
def test_owner_is_set_and_unset_owner_is_the_writers(tmp_path: Path) -> None:
    durable.write_atomic(tmp_path / "theirs", b"x", uid=1001, gid=1002)
    durable.write_atomic(tmp_path / "mine", b"x")
    theirs, mine = (tmp_path / "theirs").stat(), (tmp_path / "mine").stat()
    assert (theirs.st_uid, theirs.st_gid) == (1001, 1002)
    assert (mine.st_uid, mine.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.unit
def test_escapes_from_the_root_are_refused_before_writing(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "out").symlink_to(outside)  # a directory link leading out
    (root / "abs").symlink_to("/")  # an absolute link: the host's root
    for path in ["../outside/f", "etc/../../outside/f", str(outside / "f"),
                 "etc/out/f", "etc/out/new/dir/f", "abs/tmp/f", "etc/.."]:
        with pytest.raises(durable.EscapeError):
            durable.write_atomic(path, b"x", root=root)
    assert list(outside.iterdir()) == []
    assert not (root / "etc" / "out" / "new").exists()


@pytest.mark.unit
def test_inside_the_root_links_are_resolved_and_a_last_link_is_replaced(
        tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "alias").symlink_to("real")  # stays inside
    (outside / "secret").write_bytes(b"host file")
    (root / "real" / "trap").symlink_to(outside / "secret")
    written = durable.write_atomic("alias/f", b"in", root=root)
    assert written == root.resolve() / "real" / "f"
    assert (root / "real" / "f").read_bytes() == b"in"
    durable.write_atomic(root / "real" / "trap", b"replaced", root=root)
    assert (outside / "secret").read_bytes() == b"host file"  # never written through
    assert not (root / "real" / "trap").is_symlink()
    assert (root / "real" / "trap").read_bytes() == b"replaced"


@pytest.mark.unit
def test_staged_writes_are_confined_too(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    batch = durable.StagedWrites(root=root)
    batch.write("etc/ok", b"ok", 0o600)
    with pytest.raises(durable.EscapeError):
        batch.write("out/f", b"x", 0o644)
    with pytest.raises(durable.EscapeError):
        batch.symlink("out/l", "/dev/null")
    batch.commit()
    assert (root / "etc" / "ok").read_bytes() == b"ok"
    assert list(outside.iterdir()) == []
    assert _temps(root) == []


@pytest.mark.unit
def test_staged_batch_discarded_on_a_full_disk_leaves_old_files(tmp_path: Path) -> None:
    with _tiny_tmpfs(tmp_path / "fs") as fs:
        (fs / "a").write_bytes(b"old a")
        batch = durable.StagedWrites()
        batch.write(fs / "a", b"new a", 0o644)
        with pytest.raises(OSError):
            batch.write(fs / "b", b"y" * 1_000_000, 0o644)
        batch.discard()
        assert (fs / "a").read_bytes() == b"old a"
        assert not (fs / "b").exists()
        assert _temps(fs) == []


@pytest.mark.unit
def test_unsynced_write_is_still_atomic_and_skips_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"old")
    rec = _Recorder(monkeypatch, tmp_path / "f")
    durable.write_atomic(tmp_path / "f", b"new", sync=False)
    assert [kind for kind, _ in rec.steps] == ["replace"]
    assert rec.at_rename["dest"] == b"old"
    assert (tmp_path / "f").read_bytes() == b"new"
