"""Users, groups and SSH keys, applied to the target root's own account databases.

Like Ignition, this runs shadow-utils with ``--root`` (``groupadd``, ``useradd``,
``usermod``, ``userdel``, ``groupdel``) so /etc/passwd, /etc/group, /etc/shadow and
/etc/gshadow of the target are edited with the distribution's own locking and formats.
Groups come first so users can join them; SSH keys go to
``~/.ssh/authorized_keys.d/ignition``. ``plan_*`` build the command lines without running
anything, which keeps the argument mapping testable.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from flotilla.ignition.filesystem_entries import StageError


def _entries(path: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if fields and fields[0]:
                    found.setdefault(fields[0], fields)
    except OSError:
        pass
    return found


def plan_group(root: str, group: dict[str, Any], existing: bool) -> list[str] | None:
    name = group["name"]
    if group.get("shouldExist") is False:
        return ["groupdel", "--root", root, name] if existing else None
    if existing:
        return None
    args = ["groupadd", "--root", root]
    if group.get("gid") is not None:
        args += ["--gid", str(group["gid"])]
    args += ["--password", group.get("passwordHash") or "*"]
    if group.get("system"):
        args.append("--system")
    return [*args, name]


def plan_user(root: str, user: dict[str, Any], existing: bool) -> list[str] | None:
    name = user["name"]
    if user.get("shouldExist") is False:
        return ["userdel", "--root", root, name] if existing else None
    if existing:
        args = ["usermod", "--root", root]
        if user.get("homeDir"):
            args += ["--home", user["homeDir"], "--move-home"]
        if user.get("passwordHash") is not None:
            args += ["--password", user["passwordHash"]]
    else:
        args = ["useradd", "--root", root]
        if user.get("homeDir"):
            args += ["--home-dir", user["homeDir"]]
        args.append("--no-create-home" if user.get("noCreateHome") else "--create-home")
        args += ["--password", user.get("passwordHash") or "*"]
    if user.get("uid") is not None:
        args += ["--uid", str(user["uid"])]
    if user.get("gecos"):
        args += ["--comment", user["gecos"]]
    if user.get("primaryGroup"):
        args += ["--gid", user["primaryGroup"]]
    if user.get("groups"):
        args += ["--groups", ",".join(user["groups"])]
    if not existing:
        if user.get("noUserGroup"):
            args.append("--no-user-group")
        if user.get("system"):
            args.append("--system")
        if user.get("noLogInit"):
            args.append("--no-log-init")
    if user.get("shell"):
        args += ["--shell", user["shell"]]
    if existing and len(args) == 3:
        return None
    return [*args, name]


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StageError(f"{' '.join(args[:1] + args[3:])} failed ({result.returncode}): "
                         f"{result.stderr.strip()}")


def write_ssh_keys(root: str, name: str, keys: list[str]) -> None:
    entry = _entries(os.path.join(root, "etc/passwd")).get(name)
    if entry is None or len(entry) < 6:
        raise StageError(f"user {name!r} not found for its SSH keys")
    uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
    home_host = os.path.join(root, home.lstrip("/"))
    directory = home_host
    for part in (".ssh", "authorized_keys.d"):
        directory = os.path.join(directory, part)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
            os.chown(directory, uid, gid)
            os.chmod(directory, 0o700)
    path = os.path.join(directory, "ignition")
    data = "".join(f"{key}\n" for key in keys).encode()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def apply(root: str, passwd: dict[str, Any]) -> None:
    root = os.path.abspath(root)
    groups = _entries(os.path.join(root, "etc/group"))
    for group in passwd.get("groups", []):
        args = plan_group(root, group, group["name"] in groups)
        if args:
            _run(args)
    users = _entries(os.path.join(root, "etc/passwd"))
    for user in passwd.get("users", []):
        existing = user["name"] in users
        args = plan_user(root, user, existing)
        if args:
            _run(args)
        if not existing and user.get("passwordHash") is not None and args:
            # Ignition sets the hash again with usermod after creating the user.
            _run(["usermod", "--root", root, "--password", user["passwordHash"], user["name"]])
        if user.get("sshAuthorizedKeys") and user.get("shouldExist") is not False:
            write_ssh_keys(root, user["name"], user["sshAuthorizedKeys"])
