"""The disks, mount and umount stages: GPT partitions, filesystems, mounts.

Partitioning uses ``sgdisk`` (gdisk package) as Ignition does; filesystems use the
distribution's mkfs tools (e2fsprogs, xfsprogs, dosfstools, util-linux's mkswap). An
existing filesystem that already matches the config is kept unless ``wipeFilesystem`` is
set, so re-running after a half-finished boot does not destroy data. ``plan_*`` return the
command lines without running them; the ``*_stage`` functions run them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from flotilla.ignition import rootpath


class StorageError(Exception):
    pass


Log = Callable[[str], None]


def _run(args: list[str], log: Log) -> str:
    log("running " + " ".join(args))
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StorageError(f"{args[0]} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def plan_partitions(disk: dict[str, Any]) -> list[list[str]]:
    """sgdisk invocations for one disk: zap if asked, delete, then create."""
    device = disk["device"]
    commands: list[list[str]] = []
    if disk.get("wipeTable"):
        commands.append(["sgdisk", "--zap-all", device])
    create: list[str] = []
    delete: list[str] = []
    for part in disk.get("partitions", []):
        number = part.get("number", 0)
        if part.get("shouldExist") is False:
            if number:
                delete += [f"--delete={number}"]
            continue
        start = f"{part['startMiB']}M" if part.get("startMiB") else "0"
        end = f"+{part['sizeMiB']}M" if part.get("sizeMiB") else "0"
        create.append(f"--new={number}:{start}:{end}")
        if part.get("label") is not None:
            create.append(f"--change-name={number}:{part['label']}")
        if part.get("typeGuid"):
            create.append(f"--typecode={number}:{part['typeGuid']}")
        if part.get("guid"):
            create.append(f"--partition-guid={number}:{part['guid']}")
    if delete:
        commands.append(["sgdisk", *delete, device])
    if create:
        commands.append(["sgdisk", *create, device])
    return commands


def plan_mkfs(fs: dict[str, Any]) -> list[str] | None:
    fmt = fs.get("format", "")
    device = fs["device"]
    label, uuid, options = fs.get("label"), fs.get("uuid"), fs.get("options", [])
    if fmt in ("", "none"):
        return None
    if fmt == "ext4":
        args = ["mkfs.ext4", "-F", "-q"]
        args += ["-L", label] if label else []
        args += ["-U", uuid] if uuid else []
    elif fmt == "xfs":
        args = ["mkfs.xfs", "-f", "-q"]
        args += ["-L", label] if label else []
        args += ["-m", f"uuid={uuid}"] if uuid else []
    elif fmt == "vfat":
        args = ["mkfs.vfat"]
        args += ["-n", label] if label else []
        args += ["-i", uuid.replace("-", "")] if uuid else []
    elif fmt == "swap":
        args = ["mkswap", "-f"]
        args += ["-L", label] if label else []
        args += ["-U", uuid] if uuid else []
    elif fmt == "btrfs":
        args = ["mkfs.btrfs", "-f"]
        args += ["-L", label] if label else []
        args += ["-U", uuid] if uuid else []
    else:
        raise StorageError(f"unsupported filesystem format {fmt}")
    return [*args, *options, device]


def probe(device: str) -> dict[str, str]:
    """blkid's view of a device: TYPE, LABEL, UUID (empty dict if blank)."""
    result = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True,
                            text=True, check=False)
    found = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key] = value
    return found


def _wait_for(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise StorageError(f"device {path} did not appear")
        time.sleep(0.05)


def disks_stage(storage: dict[str, Any], log: Log = lambda m: None) -> None:
    for disk in storage.get("disks", []):
        for command in plan_partitions(disk):
            _run(command, log)
        # Without udev the kernel only learns of new partitions when told.
        subprocess.run(["partx", "-u", disk["device"]], capture_output=True, check=False)
    for fs in storage.get("filesystems", []):
        _wait_for(fs["device"])
        args = plan_mkfs(fs)
        if args is None:
            continue
        existing = probe(fs["device"])
        kind = {"swap": "swap"}.get(fs["format"], fs["format"])
        matches = existing.get("TYPE") == kind and all(
            not fs.get(key) or existing.get(field, "").lower() == fs[key].lower()
            for key, field in (("label", "LABEL"), ("uuid", "UUID")))
        if matches and not fs.get("wipeFilesystem"):
            log(f"keeping existing {kind} filesystem on {fs['device']}")
            continue
        if existing.get("TYPE") and not fs.get("wipeFilesystem"):
            raise StorageError(f"{fs['device']} holds a {existing['TYPE']} filesystem that "
                               "does not match and wipeFilesystem is false")
        if fs.get("wipeFilesystem"):
            _run(["wipefs", "-a", fs["device"]], log)
        _run(args, log)


def _mountable(storage: dict[str, Any]) -> list[dict[str, Any]]:
    found = [fs for fs in storage.get("filesystems", [])
             if fs.get("path") and fs.get("format") not in (None, "", "none", "swap")]
    return sorted(found, key=lambda fs: len([p for p in fs["path"].split("/") if p]))


def mount_stage(root: str, storage: dict[str, Any], log: Log = lambda m: None) -> None:
    for fs in _mountable(storage):
        target = rootpath.resolve(root, fs["path"], follow_last=True)
        os.makedirs(target, exist_ok=True)
        args = ["mount", "-t", fs["format"]]
        if fs.get("mountOptions"):
            args += ["-o", ",".join(fs["mountOptions"])]
        _run([*args, fs["device"], target], log)


def umount_stage(root: str, storage: dict[str, Any], log: Log = lambda m: None) -> None:
    for fs in reversed(_mountable(storage)):
        target = rootpath.resolve(root, fs["path"], follow_last=True)
        if os.path.ismount(target):
            _run(["umount", target], log)
