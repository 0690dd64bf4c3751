"""Users, groups and SSH keys, applied to the target root's own account databases.

Like Ignition, this runs shadow-utils with ``--root`` (``groupadd``, ``useradd``,
``usermod``, ``userdel``, ``groupdel``) so /etc/passwd, /etc/group, /etc/shadow and
/etc/gshadow of the target are edited with the distribution's own locking and formats.
Groups come first so users can join them, and a group that already exists fails the stage
before anything is written (Ignition's groupadd refuses it); SSH keys go to
``~/.ssh/authorized_keys.d/ignition``, missing directories on the way made 0700 for the
user. ``plan_*`` build the command lines without running anything, which keeps the
argument mapping testable.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from flotilla.daemons.durable import write_atomic
from flotilla.ignition import rootpath
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


def locked_if_empty(password_hash: str) -> str:
    """An empty ``passwordHash`` locks the password ("*") as in Ignition; an empty shadow
    field would instead let the account log in without any password."""
    return password_hash or "*"


def plan_user(root: str, user: dict[str, Any], existing: bool) -> list[str] | None:
    name = user["name"]
    if user.get("shouldExist") is False:
        # --remove as in Ignition: the home directory and mail spool go with the user.
        return ["userdel", "--root", root, "--remove", name] if existing else None
    if existing:
        args = ["usermod", "--root", root]
        if user.get("homeDir"):
            args += ["--home", user["homeDir"], "--move-home"]
        if user.get("passwordHash") is not None:
            args += ["--password", locked_if_empty(user["passwordHash"])]
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


def keys_text(keys: list[str]) -> bytes:
    """The fragment's bytes: Ignition joins the keys with newlines and ends with one."""
    text = "\n".join(keys)
    return (text if text.endswith("\n") else text + "\n").encode()


def make_user_dirs(root: str, host_dir: str, home: str, uid: int, gid: int) -> None:
    """Create each missing directory down to ``host_dir`` as Ignition does for SSH keys.

    Ignition runs ``mkdir -p`` as the user with umask 077, so every directory it has to
    make, the home directory itself too when the image has none (``/root`` in a fresh
    image), ends up 0700 and owned by the user; directories already there are left alone.
    For root that holds above the home too (a missing /var of /var/roothome is 0700). Any
    other user cannot create those in a root-owned tree, and Ignition fails with
    "permission denied"; here they become ordinary 0755 root:root parents instead, while the
    home and what is under it are still 0700 and the user's.
    """
    relative = os.path.relpath(host_dir, root)
    current = root
    for part in [] if relative == "." else relative.split(os.sep):
        current = os.path.join(current, part)
        if os.path.isdir(current) and not os.path.islink(current):
            continue
        if os.path.lexists(current):
            raise StageError(f"{current[len(root):]} is not a directory")
        inside = os.path.commonpath([home, current]) == home
        mode, owner = (0o700, (uid, gid)) if inside or uid == 0 else (0o755, (0, 0))
        os.mkdir(current, mode)
        os.chown(current, *owner)
        os.chmod(current, mode)


def write_ssh_keys(root: str, name: str, keys: list[str]) -> None:
    """Write ``~/.ssh/authorized_keys.d/ignition``, the home resolved inside the root."""
    entry = _entries(os.path.join(root, "etc/passwd")).get(name)
    if entry is None or len(entry) < 6:
        raise StageError(f"user {name!r} not found for its SSH keys")
    uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
    path = rootpath.resolve(root, f"{home.rstrip('/')}/.ssh/authorized_keys.d/ignition")
    home_host = rootpath.resolve(root, home, follow_last=True)
    make_user_dirs(root, os.path.dirname(path), home_host, uid, gid)
    # The files stage ends with one sync of everything it wrote.
    write_atomic(path, keys_text(keys), mode=0o600, uid=uid, gid=gid, root=root, sync=False,
                 make_parents=False)


def check(root: str, passwd: dict[str, Any]) -> None:
    """Refuse, before anything is written, a group that is to be added but already exists.

    Ignition runs ``groupadd`` for every group that should exist, whether or not it is
    there, and groupadd refuses an existing name, so the files stage fails; it fails only
    after the groups before it were added, though, and this fails before any of them.
    """
    existing = _entries(os.path.join(os.path.abspath(root), "etc/group"))
    for index, group in enumerate(passwd.get("groups", [])):
        if group.get("shouldExist") is not False and group["name"] in existing:
            raise StageError(f'$.passwd.groups.{index}: group "{group["name"]}" already '
                             "exists in the target's /etc/group (Ignition's groupadd "
                             "refuses it)")


def apply(root: str, passwd: dict[str, Any]) -> None:
    root = os.path.abspath(root)
    check(root, passwd)
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
        if user.get("shouldExist") is False:
            continue
        if user.get("passwordHash") is not None:
            # Ignition sets the hash once more with usermod after creating or modifying
            # any user, which shows in the shadow- backups.
            _run(["usermod", "--root", root, "--password", locked_if_empty(user["passwordHash"]),
                  user["name"]])
        if user.get("sshAuthorizedKeys"):
            write_ssh_keys(root, user["name"], user["sshAuthorizedKeys"])
