"""A config drive as a block device: a filesystem image labelled config-2 on a loop
device is found by its label, mounted read-only for the read, unmounted after, and its
user-data and metadata applied.

The machine running these tests has no udevd, so this also covers finding the drive
where udev has not probed it (blkid reads the labels)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flotilla.cloudinit import datasource as ds

NEEDS = ("losetup", "mkfs.ext4", "mount", "umount", "blkid")


@pytest.fixture(autouse=True)
def _root_and_tools() -> None:
    """The tests run as root and tests/setup.sh installs util-linux and e2fsprogs, so a
    gap is a broken setup: fail and name it, since a skip would pass unnoticed in CI."""
    problems = [] if os.geteuid() == 0 else ["not running as root (loop devices and mount "
                                             "need it)"]
    missing = [tool for tool in NEEDS if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing {', '.join(missing)} (util-linux, e2fsprogs)")
    if problems:
        pytest.fail("config drive test cannot run: " + "; ".join(problems))

USER_DATA = "#cloud-config\nwrite_files:\n  - path: /etc/from-drive\n    content: drive-ok\n"
META = '{"hostname": "drive-host", "public_keys": {"k": "ssh-rsa AAAAdrive k"}}'


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[str]:
    tree = tmp_path / "tree/openstack/latest"
    tree.mkdir(parents=True)
    (tree / "user_data").write_text(USER_DATA)
    (tree / "meta_data.json").write_text(META)
    image = tmp_path / "config-2.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "config-2", "-d", str(tmp_path / "tree"),
                    str(image)], check=True, capture_output=True)
    device = subprocess.run(["losetup", "--find", "--show", "--read-only", str(image)],
                            capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["umount", device], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def _mounted(device: str) -> bool:
    return any(line.split()[0] == device for line in Path("/proc/mounts").read_text()
               .splitlines())


@pytest.mark.timeout(60)
def test_drive_is_found_by_label_read_and_unmounted(drive: str) -> None:
    assert drive in ds.find_config_drive_devices()
    source = ds.MountedConfigDrive(devices=lambda: [drive])
    assert source.available()
    user_data, meta = source.fetch()
    assert user_data.decode() == USER_DATA
    assert meta.hostname == "drive-host"
    assert meta.public_keys == {"k": "ssh-rsa AAAAdrive k"}
    assert not _mounted(drive)


@pytest.mark.timeout(60)
def test_command_finds_the_drive_and_applies_it(drive: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "core:x:500:500::/home/core:/bin/bash\n")
    (root / "home/core").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "flotilla.cloudinit.main", "--from-configdrive",
         "--timeout", "10", "--root", str(root)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "etc/from-drive").read_text() == "drive-ok"
    assert (root / "etc/hostname").read_text() == "drive-host\n"
    keys = root / "home/core/.ssh/authorized_keys.d/coreos-cloudinit"
    assert keys.read_text() == "ssh-rsa AAAAdrive k\n"
    assert not _mounted(drive)
