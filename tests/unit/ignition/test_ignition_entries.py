"""What the files stage does to entries that already exist, and the passwd pre-flight.

These run on a scratch directory as the target root; ownership checks need root, which the
test tiers run as.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flotilla.ignition import engine, passwd
from flotilla.ignition.filesystem_entries import Owners, StageError, write_directory


def _seed_dir(root: Path) -> Path:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nusers:x:100:\n")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub/old.txt").write_text("old")
    os.chown(data, 1000, 1000)
    data.chmod(0o700)
    return data


def test_overwrite_replaces_a_directory_and_its_contents(tmp_path: Path) -> None:
    data = _seed_dir(tmp_path)
    write_directory(str(tmp_path), {"path": "/data", "overwrite": True, "mode": 0o750},
                    Owners(str(tmp_path)))
    assert os.listdir(data) == []
    info = data.stat()
    assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (0o750, 0, 0)


def test_overwrite_without_mode_gives_a_fresh_0755_directory(tmp_path: Path) -> None:
    data = _seed_dir(tmp_path)
    write_directory(str(tmp_path), {"path": "/data", "overwrite": True}, Owners(str(tmp_path)))
    info = data.stat()
    assert (os.listdir(data), info.st_mode & 0o7777, info.st_uid) == ([], 0o755, 0)


def test_overwrite_replaces_a_file(tmp_path: Path) -> None:
    _seed_dir(tmp_path)
    (tmp_path / "spool").write_text("a file")
    write_directory(str(tmp_path), {"path": "/spool", "overwrite": True},
                    Owners(str(tmp_path)))
    assert (tmp_path / "spool").is_dir()


def test_without_overwrite_contents_mode_and_owner_stay(tmp_path: Path) -> None:
    data = _seed_dir(tmp_path)
    write_directory(str(tmp_path), {"path": "/data", "group": {"name": "users"}},
                    Owners(str(tmp_path)))
    info = data.stat()
    assert (data / "sub/old.txt").read_text() == "old"
    assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (0o700, 1000, 100)


def test_ssh_keys_for_a_user_without_home_make_it_0700_theirs(tmp_path: Path) -> None:
    _seed_dir(tmp_path)
    with open(tmp_path / "etc/passwd", "a") as handle:
        handle.write("core:x:1000:1000::/var/home/core:/bin/sh\n")
    passwd.write_ssh_keys(str(tmp_path), "root", ["ssh-ed25519 AAAA one", "ssh-rsa BBBB two"])
    passwd.write_ssh_keys(str(tmp_path), "core", ["ssh-ed25519 CCCC three\n"])
    for path, mode, owner in (("root", 0o700, 0), ("root/.ssh", 0o700, 0),
                              ("var/home/core", 0o700, 1000),
                              ("var/home/core/.ssh/authorized_keys.d", 0o700, 1000),
                              ("var", 0o755, 0), ("var/home", 0o755, 0)):
        info = (tmp_path / path).stat()
        assert (path, info.st_mode & 0o7777, info.st_uid, info.st_gid) == (path, mode,
                                                                          owner, owner)
    keys = tmp_path / "root/.ssh/authorized_keys.d/ignition"
    assert keys.read_text() == "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n"
    assert (keys.stat().st_mode & 0o777, keys.stat().st_uid) == (0o600, 0)
    core_keys = tmp_path / "var/home/core/.ssh/authorized_keys.d/ignition"
    assert core_keys.read_text() == "ssh-ed25519 CCCC three\n"


def test_ssh_keys_home_behind_a_link_stays_inside_the_root(tmp_path: Path) -> None:
    _seed_dir(tmp_path)
    (tmp_path / "root").symlink_to("/var/roothome")
    passwd.write_ssh_keys(str(tmp_path), "root", ["ssh-ed25519 AAAA one"])
    assert (tmp_path / "var/roothome/.ssh/authorized_keys.d/ignition").is_file()
    # Ignition's mkdir -p as root with umask 077 makes the missing /var 0700 as well.
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700


def test_existing_group_refused_before_anything_is_written(tmp_path: Path) -> None:
    _seed_dir(tmp_path)
    config = {"groups": [{"name": "new"}, {"name": "users", "gid": 100}]}
    with pytest.raises(StageError, match=r'\$\.passwd\.groups\.1: group "users" already'):
        passwd.check(str(tmp_path), config)
    passwd.check(str(tmp_path), {"groups": [{"name": "users", "shouldExist": False},
                                            {"name": "new"}]})


def test_files_stage_with_an_existing_group_changes_nothing(tmp_path: Path) -> None:
    _seed_dir(tmp_path)
    before = (tmp_path / "etc/group").read_text()
    config = {"passwd": {"groups": [{"name": "new"}, {"name": "users"}]},
              "storage": {"files": [{"path": "/f", "contents": {"source": "data:,x"}}]}}
    with pytest.raises(StageError, match="users"):
        engine.files_stage(str(tmp_path), config)
    assert (tmp_path / "etc/group").read_text() == before
    assert not (tmp_path / "f").exists()
    assert not (tmp_path / engine.RESULT_PATH).exists()


def test_empty_password_hash_locks_instead_of_emptying() -> None:
    existing = passwd.plan_user("/r", {"name": "root", "passwordHash": ""}, True)
    assert existing == ["usermod", "--root", "/r", "--password", "*", "root"]
    assert passwd.locked_if_empty("") == "*"
    assert passwd.locked_if_empty("$6$salt$hash") == "$6$salt$hash"


def test_deleting_a_user_removes_the_home_as_ignition_does() -> None:
    args = passwd.plan_user("/r", {"name": "old", "shouldExist": False}, True)
    assert args == ["userdel", "--root", "/r", "--remove", "old"]
