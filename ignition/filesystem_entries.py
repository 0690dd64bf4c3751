"""Writing files, directories and links into the target root.

Everything remote is fetched and verified first (``prefetch``); only then does ``apply``
touch the root, so a failed download or a hash mismatch leaves the root exactly as it was.
Entries are written shallowest first (a stable sort by path depth over files, directories
and links, hard links last), leading directories are created 0755 root:root, a new file
defaults to 0644 and a new directory to 0755, and an existing file with no new contents
keeps its data and mode; ``overwrite`` replaces an existing entry of any kind (a directory
with its whole contents too). Files are written to a temporary name and renamed into place;
the stage syncs once at the end instead of after every file, since a stage that dies midway
is rerun whole (the first-boot marker is written only after that sync).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from flotilla.daemons.durable import write_atomic
from flotilla.ignition import rootpath
from flotilla.ignition.fetch import Fetcher


class StageError(Exception):
    pass


@dataclass
class FetchedFile:
    node: dict[str, Any]
    contents: bytes | None
    appends: list[bytes]


def prefetch(storage: dict[str, Any], fetcher: Fetcher) -> list[FetchedFile]:
    """Download and verify every file's contents and appends, writing nothing."""
    fetched = []
    for node in storage.get("files", []):
        contents_res = node.get("contents", {})
        contents = fetcher.fetch(contents_res) if contents_res.get("source") else None
        appends = [fetcher.fetch(res) for res in node.get("append", [])]
        fetched.append(FetchedFile(node, contents, appends))
    return fetched


def _read_db(path: str) -> dict[str, int]:
    ids: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 3 and fields[2].isdigit():
                    ids.setdefault(fields[0], int(fields[2]))
    except OSError:
        pass
    return ids


class Owners:
    """Resolves user and group names through the target root's own databases."""

    def __init__(self, root: str) -> None:
        self.users = _read_db(os.path.join(root, "etc/passwd"))
        self.groups = _read_db(os.path.join(root, "etc/group"))

    def ids(self, node: dict[str, Any], default: tuple[int, int]) -> tuple[int, int]:
        uid, gid = default
        user, group = node.get("user", {}), node.get("group", {})
        if user.get("id") is not None:
            uid = user["id"]
        elif user.get("name"):
            if user["name"] not in self.users:
                raise StageError(f"{node['path']}: no such user {user['name']!r}")
            uid = self.users[user["name"]]
        if group.get("id") is not None:
            gid = group["id"]
        elif group.get("name"):
            if group["name"] not in self.groups:
                raise StageError(f"{node['path']}: no such group {group['name']!r}")
            gid = self.groups[group["name"]]
        return uid, gid


def make_leading_dirs(root: str, config_path: str, known: set[str] | None = None) -> None:
    """Create missing parents 0755 root:root; ``known`` caches parents already checked."""
    parent = os.path.dirname(config_path.rstrip("/"))
    if known is not None and parent in known:
        return
    parts = [p for p in parent.split("/") if p]
    if known is not None:
        known.add(parent)
    for depth in range(1, len(parts) + 1):
        host = rootpath.resolve(root, "/" + "/".join(parts[:depth]), follow_last=True)
        if os.path.isdir(host):
            continue
        if os.path.lexists(host):
            raise StageError(f"{config_path}: {'/' + '/'.join(parts[:depth])} is not a directory")
        os.mkdir(host, 0o755)
        os.chmod(host, 0o755)
        os.chown(host, 0, 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove(host: str) -> None:
    if os.path.isdir(host) and not os.path.islink(host):
        for entry in os.scandir(host):
            _remove(entry.path)
        os.rmdir(host)
    else:
        os.unlink(host)


def write_file(root: str, item: FetchedFile, owners: Owners,
               known: set[str] | None = None) -> None:
    node = item.node
    make_leading_dirs(root, node["path"], known)
    host = rootpath.resolve(root, node["path"])
    exists = os.path.lexists(host)
    if exists and item.contents is not None and not node.get("overwrite"):
        if not os.path.isfile(host) or os.path.islink(host):
            raise StageError(f"{node['path']}: exists and overwrite is false")
        raise StageError(f"{node['path']}: file exists and overwrite is false")
    if exists and item.contents is None and os.path.isfile(host) and not os.path.islink(host):
        info = os.stat(host)
        mode = node.get("mode", stat.S_IMODE(info.st_mode))
        uid, gid = owners.ids(node, (info.st_uid, info.st_gid))
        data = None
    else:
        if exists:
            _remove(host)
        mode = node.get("mode", 0o644)
        uid, gid = owners.ids(node, (0, 0))
        data = item.contents or b""
    if data is not None:
        # Unsynced: the stage syncs once at the end (see the module docstring).
        write_atomic(host, data, mode=mode, uid=uid, gid=gid, root=root, sync=False,
                     make_parents=False)
    if not item.appends:
        if data is None:
            os.chown(host, uid, gid)
            os.chmod(host, mode)
        return
    for extra in item.appends:
        fd = os.open(host, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            _write_all(fd, extra)
        finally:
            os.close(fd)
    os.chown(host, uid, gid)
    os.chmod(host, mode)


def write_directory(root: str, node: dict[str, Any], owners: Owners) -> None:
    """Create or adjust a directory; ``overwrite`` replaces whatever is there.

    With ``overwrite`` Ignition removes the existing entry, a directory with all its
    contents included, and creates an empty one (0755 root:root unless the node says
    otherwise); without it an existing directory keeps its contents, mode and owner.
    """
    make_leading_dirs(root, node["path"])
    host = rootpath.resolve(root, node["path"])
    if os.path.lexists(host) and node.get("overwrite"):
        _remove(host)
    elif os.path.lexists(host) and not (os.path.isdir(host) and not os.path.islink(host)):
        raise StageError(f"{node['path']}: exists and is not a directory")
    if not os.path.isdir(host):
        os.mkdir(host, 0o755)
        uid, gid = owners.ids(node, (0, 0))
        mode = node.get("mode", 0o755)
    else:
        info = os.stat(host)
        uid, gid = owners.ids(node, (info.st_uid, info.st_gid))
        mode = node.get("mode", stat.S_IMODE(info.st_mode))
    os.chown(host, uid, gid)
    os.chmod(host, mode)


def write_link(root: str, node: dict[str, Any], owners: Owners) -> None:
    make_leading_dirs(root, node["path"])
    host = rootpath.resolve(root, node["path"])
    target = node["target"]
    if os.path.lexists(host):
        same = (not node.get("hard") and os.path.islink(host)
                and os.readlink(host) == target)
        if not same and not node.get("overwrite"):
            raise StageError(f"{node['path']}: exists and overwrite is false")
        _remove(host)
    if node.get("hard"):
        os.link(rootpath.resolve(root, target), host, follow_symlinks=False)
        return
    os.symlink(target, host)
    uid, gid = owners.ids(node, (0, 0))
    os.lchown(host, uid, gid)


def ordered_nodes(storage: dict[str, Any]) -> list[tuple[str, Any]]:
    """Files, directories and symlinks by depth (stable), then hard links."""
    entries: list[tuple[str, Any]] = []
    entries += [("file", node) for node in storage.get("files", [])]
    entries += [("directory", node) for node in storage.get("directories", [])]
    hard = []
    for node in storage.get("links", []):
        (hard if node.get("hard") else entries).append(("link", node))

    def depth(entry: tuple[str, Any]) -> int:
        return len([p for p in entry[1]["path"].split("/") if p])

    entries.sort(key=depth)
    return entries + hard


def apply(root: str, storage: dict[str, Any], fetched: list[FetchedFile]) -> None:
    owners = Owners(root)
    by_path = {item.node["path"]: item for item in fetched}
    known: set[str] = set()
    for kind, node in ordered_nodes(storage):
        try:
            if kind == "file":
                write_file(root, by_path[node["path"]], owners, known)
            elif kind == "directory":
                write_directory(root, node, owners)
            else:
                write_link(root, node, owners)
        except (OSError, rootpath.EscapeError) as exc:
            raise StageError(f"writing {kind} {node['path']}: {exc}") from None
