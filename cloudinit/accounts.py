"""Users and groups read from ``<root>/etc/{passwd,group,shadow}``.

Read from the files rather than through ``pwd``/``grp`` so that ``--root`` works on an image
or a temp directory exactly as on the running machine (nss modules are not consulted;
cloud-config users are local users).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


class Accounts:
    """A snapshot of the account files under one root."""

    def __init__(self, root: Path) -> None:
        self.users: dict[str, Account] = {}
        for row in _rows(root / "etc/passwd"):
            if len(row) >= 6 and row[2].isdigit() and row[3].isdigit():
                self.users[row[0]] = Account(row[0], int(row[2]), int(row[3]), row[5])
        self.groups: dict[str, int] = {
            row[0]: int(row[2]) for row in _rows(root / "etc/group")
            if len(row) >= 3 and row[2].isdigit()
        }
        self.hashes: dict[str, str] = {
            row[0]: row[1] for row in _rows(root / "etc/shadow") if len(row) >= 2
        }

    def resolve_owner(self, owner: str) -> tuple[int, int] | None:
        """``user``, ``user:group``, ``user.group``, ``:group`` or numeric ids -> (uid, gid).

        A user alone means that user's primary group, as chown does. None if unknown.
        """
        user, sep, group = owner.partition(":")
        if not sep and "." in owner and owner not in self.users:
            user, _, group = owner.partition(".")
        uid, gid = -1, -1
        if user:
            if user in self.users:
                uid, gid = self.users[user].uid, self.users[user].gid
            elif user.isdigit():
                uid = int(user)
            else:
                return None
        if group:
            if group in self.groups:
                gid = self.groups[group]
            elif group.isdigit():
                gid = int(group)
            else:
                return None
        if not user:
            uid = 0  # ":group" keeps the owner; files are created by root
        if gid == -1:
            gid = 0
        return uid, gid
