"""Disks, mount and files stages on a loop device: GPT, ext4 and xfs, files inside them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.ignition.sidebyside import REPO, seed_root

TOOLS = ("losetup", "sgdisk", "mkfs.ext4", "mkfs.xfs", "blkid", "partx", "mount", "umount")
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@pytest.fixture(autouse=True)
def _root_and_storage_tools() -> None:
    """tests/setup.sh installs every tool and the tests run as root, so a gap is a broken
    setup: fail and name it, since a skip would hide it in CI."""
    problems = [] if os.geteuid() == 0 else ["not running as root (loop devices need it)"]
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        problems.append(f"missing {', '.join(missing)} (tests/setup.sh installs gdisk, "
                        "xfsprogs, e2fsprogs and util-linux)")
    if problems:
        pytest.fail("storage test cannot run: " + "; ".join(problems))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flotilla.ignition.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.timeout(120)
def test_gpt_ext4_xfs_created_mounted_and_written(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.truncate(640 * 1024 * 1024)  # xfs needs more than 300 MB
    device = subprocess.run(["losetup", "--find", "--show", "--partscan", str(image)],
                            capture_output=True, text=True, check=True).stdout.strip()
    root = tmp_path / "root"
    mounted: list[Path] = []
    try:
        seed_root(root)
        config = {
            "ignition": {"version": "3.3.0"},
            "storage": {
                "disks": [{"device": device, "wipeTable": True, "partitions": [
                    {"number": 1, "label": "DATA", "sizeMiB": 150, "typeGuid": LINUX_FS},
                    {"number": 2, "label": "LOGS", "sizeMiB": 0,
                     "guid": "5B1E2F3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B"}]}],
                "filesystems": [
                    {"device": f"{device}p1", "format": "ext4", "label": "data",
                     "uuid": "8d5bb5f6-2f0a-4a5e-9c0e-2f1b7a3c4d5e", "path": "/var/data"},
                    {"device": f"{device}p2", "format": "xfs", "label": "logs",
                     "path": "/var/log/app", "wipeFilesystem": True}],
                "files": [
                    {"path": "/var/data/hello.txt", "contents": {"source": "data:,on%20ext4"}},
                    {"path": "/var/log/app/first.log", "mode": 0o600,
                     "contents": {"source": "data:,on%20xfs"}}],
            },
        }
        config_path = tmp_path / "storage.ign"
        config_path.write_text(json.dumps(config))
        common = ["--root", str(root), "--config", str(config_path)]
        disks = _cli("disks", *common)
        assert disks.returncode == 0, disks.stderr
        table = subprocess.run(["sgdisk", "--print", device], capture_output=True, text=True,
                               check=True).stdout
        assert "DATA" in table and "LOGS" in table
        info1 = subprocess.run(["sgdisk", "--info=1", device], capture_output=True, text=True,
                               check=True).stdout
        assert LINUX_FS in info1 and "150.0 MiB" in info1
        info2 = subprocess.run(["sgdisk", "--info=2", device], capture_output=True, text=True,
                               check=True).stdout
        assert "5B1E2F3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B" in info2
        probe1 = subprocess.run(["blkid", "-p", "-o", "export", f"{device}p1"],
                                capture_output=True, text=True, check=False).stdout
        assert "TYPE=ext4" in probe1 and "LABEL=data" in probe1
        assert "UUID=8d5bb5f6-2f0a-4a5e-9c0e-2f1b7a3c4d5e" in probe1
        probe2 = subprocess.run(["blkid", "-p", "-o", "export", f"{device}p2"],
                                capture_output=True, text=True, check=False).stdout
        assert "TYPE=xfs" in probe2 and "LABEL=logs" in probe2

        mounted += [root / "var/data", root / "var/log/app"]
        mount = _cli("mount", *common)
        assert mount.returncode == 0, mount.stderr
        assert os.path.ismount(root / "var/data") and os.path.ismount(root / "var/log/app")
        files = _cli("files", *common)
        assert files.returncode == 0, files.stderr
        assert (root / "var/data/hello.txt").read_text() == "on ext4"
        assert (root / "var/log/app/first.log").stat().st_mode & 0o777 == 0o600
        umount = _cli("umount", *common)
        assert umount.returncode == 0, umount.stderr
        assert not os.path.ismount(root / "var/data")

        # Data survives and a second disks run keeps the matching filesystems.
        again = _cli("disks", *common)
        assert again.returncode == 0, again.stderr
        check = tmp_path / "check"
        check.mkdir()
        subprocess.run(["mount", f"{device}p1", str(check)], check=True)
        mounted.append(check)
        assert (check / "hello.txt").read_text() == "on ext4"
    finally:
        for point in reversed(mounted):
            if os.path.ismount(point):
                subprocess.run(["umount", "-l", str(point)], check=False)
        subprocess.run(["losetup", "--detach", device], check=False)
