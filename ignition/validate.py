"""Semantic validation of a type-checked config, in the order Ignition reports it.

Input is the normalised dict (known keys only, nulls dropped) and the spec minor version;
output is a Report whose entries carry JSON paths. Each struct's own checks come before
its children's, duplicate entries are reported after the walk, exactly as
``ignition-validate`` lists them, so its output can be compared line for line.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from flotilla.ignition import messages as M
from flotilla.ignition import unitfile, urls
from flotilla.ignition.jsonpos import Path
from flotilla.ignition.report import Report

_GUID = re.compile(
    r"^(|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$")
UNIT_SUFFIXES = (".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
                 ".path", ".timer", ".snapshot", ".slice", ".scope")
FS_FORMATS = ("", "ext4", "btrfs", "xfs", "vfat", "swap")
RAID_LEVELS = ("linear", "raid0", "0", "stripe", "raid1", "1", "mirror", "raid4", "4",
               "raid5", "5", "raid6", "6", "raid10", "10")


def _check_path(report: Report, path: Path, value: str | None) -> None:
    if not value:
        report.error(path, M.NO_PATH)
    elif not value.startswith("/"):
        report.error(path, M.PATH_RELATIVE)
    elif posixpath.normpath(value) != value or value.startswith("//"):
        report.error(path, M.DIRTY_PATH)


def _check_hash(value: str, minor: int) -> str | None:
    function, sep, digest = value.partition("-")
    if not sep:
        return M.HASH_MALFORMED
    sizes = {"sha512": 128}
    if minor >= 1:
        sizes["sha256"] = 64
    if function not in sizes:
        return M.HASH_UNRECOGNIZED
    if len(digest) != sizes[function]:
        return M.HASH_WRONG_SIZE
    return None


def check_resource(report: Report, path: Path, res: dict[str, Any], minor: int,
                   source_required: bool) -> None:
    source = res.get("source")
    if source_required and not source:
        report.error(path, M.SOURCE_REQUIRED)
    if source:
        try:
            urls.validate(source)
        except urls.URLError as exc:
            report.error((*path, "source"), str(exc))
    compression = res.get("compression")
    if compression not in (None, "", "gzip"):
        report.error((*path, "compression"), M.COMPRESSION_INVALID)
    digest = res.get("verification", {}).get("hash")
    if digest is not None:
        problem = _check_hash(digest, minor)
        if problem:
            report.error((*path, "verification", "hash"), problem)
    headers = res.get("httpHeaders") or []
    if headers and urls.scheme_of(source or "") not in ("http", "https"):
        report.error((*path, "httpHeaders"), M.HEADERS_WRONG_SCHEME)
    for index, header in enumerate(headers):
        if not header.get("name"):
            report.error((*path, "httpHeaders", index, "name"), M.HEADER_NAME_EMPTY)


def _check_mode(report: Report, path: Path, mode: int | None, minor: int) -> None:
    if mode is None:
        return
    if mode < 0 or mode > 0o7777:
        report.error(path, M.FILE_ILLEGAL_MODE)
    if mode & 0o7000 and minor < 6:
        report.warning(path, M.SPECIAL_MODE_BITS_OLD if minor < 4 else M.SPECIAL_MODE_BITS)


def _check_node(report: Report, path: Path, node: dict[str, Any]) -> None:
    _check_path(report, (*path, "path"), node.get("path"))
    for who in ("user", "group"):
        ident = node.get(who, {})
        if ident.get("id") is not None and ident.get("name"):
            report.error((*path, who), M.BOTH_ID_AND_NAME)


def _storage_level(report: Report, storage: dict[str, Any]) -> None:
    links = storage.get("links", [])
    for index, link in enumerate(links):
        if not link.get("target"):
            report.error(("storage", "links", index, "target"), M.LINK_TARGET_REQUIRED)
    link_paths = {link.get("path") for link in links if not link.get("hard")}
    kinds = (("files", M.FILE_USED_SYMLINK), ("directories", M.DIRECTORY_USED_SYMLINK),
             ("links", M.LINK_USED_SYMLINK))
    for kind, message in kinds:
        for index, node in enumerate(storage.get(kind, [])):
            node_path = node.get("path") or ""
            parent = posixpath.dirname(node_path)
            while parent not in ("/", ""):
                if parent in link_paths:
                    report.error(("storage", kind, index), message)
                    break
                parent = posixpath.dirname(parent)


def _check_storage(report: Report, storage: dict[str, Any], minor: int) -> None:
    _storage_level(report, storage)
    base: Path = ("storage",)
    for index, directory in enumerate(storage.get("directories", [])):
        path = (*base, "directories", index)
        _check_node(report, path, directory)
        _check_mode(report, (*path, "mode"), directory.get("mode"), minor)
    for index, disk in enumerate(storage.get("disks", [])):
        path = (*base, "disks", index)
        if not disk.get("device"):
            report.error((*path, "device"), M.DISK_DEVICE_REQUIRED)
        for pindex, part in enumerate(disk.get("partitions", [])):
            ppath = (*path, "partitions", pindex)
            label = part.get("label")
            if label is not None and len(label) > 36:
                report.error((*ppath, "label"), M.PARTITION_LABEL_TOO_LONG)
            if label and ":" in label:
                report.error((*ppath, "label"), M.LABEL_CONTAINS_COLON)
            for key in ("guid", "typeGuid"):
                if key in part and not _GUID.match(part[key]):
                    report.error((*ppath, key), M.GUID_FORM)
    for index, file in enumerate(storage.get("files", [])):
        path = (*base, "files", index)
        _check_node(report, path, file)
        _check_mode(report, (*path, "mode"), file.get("mode"), minor)
        contents = file.get("contents", {})
        if file.get("overwrite") and not contents.get("source"):
            report.error((*path, "overwrite"), M.OVERWRITE_AND_NIL_SOURCE)
        if "contents" in file:
            check_resource(report, (*path, "contents"), contents, minor, False)
        for aindex, res in enumerate(file.get("append", [])):
            check_resource(report, (*path, "append", aindex), res, minor, False)
    for index, fs in enumerate(storage.get("filesystems", [])):
        path = (*base, "filesystems", index)
        _check_filesystem(report, path, fs, minor)
    for index, link in enumerate(storage.get("links", [])):
        _check_node(report, (*base, "links", index), link)
    for index, luks in enumerate(storage.get("luks", [])):
        path = (*base, "luks", index)
        if "keyFile" in luks:
            check_resource(report, (*path, "keyFile"), luks["keyFile"], minor, False)
        if not luks.get("device"):
            report.error((*path, "device"), M.NO_PATH)
    for index, raid in enumerate(storage.get("raid", [])):
        if raid.get("level", "") not in RAID_LEVELS:
            report.error((*base, "raid", index, "level"), M.UNRECOGNIZED_RAID_LEVEL)


def _check_filesystem(report: Report, path: Path, fs: dict[str, Any], minor: int) -> None:
    fmt = fs.get("format", "")
    formats = FS_FORMATS + (("none",) if minor >= 3 else ())
    if not fs.get("device"):
        report.error((*path, "device"), M.NO_PATH)
    if fmt not in formats:
        report.error((*path, "format"), M.FILESYSTEM_INVALID_FORMAT)
    label = fs.get("label")
    if label is not None:
        if not fmt:
            report.error((*path, "label"), M.LABEL_NEEDS_FORMAT)
        elif fmt in M.FS_LABEL_LIMITS and len(label) > M.FS_LABEL_LIMITS[fmt]:
            report.error((*path, "label"), M.fs_label_too_long(fmt))
    fs_path = fs.get("path")
    if fs_path:
        _check_path(report, (*path, "path"), fs_path)
    if not fmt and (fs_path or fs.get("uuid") or fs.get("options")):
        report.error((*path, "format"), M.FORMAT_NIL_WITH_OTHERS)


def _check_systemd(report: Report, systemd: dict[str, Any]) -> None:
    for index, unit in enumerate(systemd.get("units", [])):
        path = ("systemd", "units", index)
        name = unit.get("name", "")
        if not name.endswith(UNIT_SUFFIXES):
            report.error((*path, "name"), M.INVALID_SYSTEMD_EXT)
        contents = unit.get("contents")
        if contents:
            try:
                sections = unitfile.sections(contents)
            except unitfile.UnitSyntaxError as exc:
                report.error((*path, "contents"), f"invalid unit content: {exc}")
            else:
                if unit.get("enabled") and "Install" not in sections:
                    report.warning((*path, "contents"), M.no_install_section(name))
        for dindex, dropin in enumerate(unit.get("dropins", [])):
            dpath = (*path, "dropins", dindex)
            # A drop-in's contents are checked before its name, as Ignition lists them.
            if dropin.get("contents"):
                try:
                    unitfile.parse(dropin["contents"])
                except unitfile.UnitSyntaxError as exc:
                    report.error((*dpath, "contents"), f"invalid unit content: {exc}")
            if not dropin.get("name", "").endswith(".conf"):
                report.error((*dpath, "name"), M.INVALID_DROPIN_EXT)


def _duplicates(report: Report, cfg: dict[str, Any]) -> None:
    def scan(items: list[Any], base: Path, key, seen: dict[Any, bool] | None = None) -> None:
        seen = {} if seen is None else seen
        for index, item in enumerate(items):
            k = key(item)
            if k is None:
                continue
            if k in seen:
                report.error((*base, index), M.DUPLICATE)
            seen[k] = True

    ign = cfg.get("ignition", {})
    scan(ign.get("config", {}).get("merge", []), ("ignition", "config", "merge"),
         lambda r: r.get("source"))
    for index, res in enumerate(ign.get("config", {}).get("merge", [])):
        scan(res.get("httpHeaders", []), ("ignition", "config", "merge", index, "httpHeaders"),
             lambda h: h.get("name"))
    scan(ign.get("security", {}).get("tls", {}).get("certificateAuthorities", []),
         ("ignition", "security", "tls", "certificateAuthorities"), lambda r: r.get("source"))
    kargs = cfg.get("kernelArguments", {})
    seen_kargs: dict[Any, bool] = {}
    for key in ("shouldExist", "shouldNotExist"):
        scan(kargs.get(key, []), ("kernelArguments", key), lambda a: a, seen_kargs)
    passwd = cfg.get("passwd", {})
    scan(passwd.get("groups", []), ("passwd", "groups"), lambda g: g.get("name"))
    scan(passwd.get("users", []), ("passwd", "users"), lambda u: u.get("name"))
    for index, user in enumerate(passwd.get("users", [])):
        scan(user.get("sshAuthorizedKeys", []), ("passwd", "users", index, "sshAuthorizedKeys"),
             lambda k: k)
    storage = cfg.get("storage", {})
    scan(storage.get("disks", []), ("storage", "disks"), lambda d: d.get("device"))
    for index, disk in enumerate(storage.get("disks", [])):
        scan(disk.get("partitions", []), ("storage", "disks", index, "partitions"), partition_key)
    node_seen: dict[Any, bool] = {}
    for kind in ("directories", "files", "links"):
        scan(storage.get(kind, []), ("storage", kind), lambda n: n.get("path"), node_seen)
    for index, file in enumerate(storage.get("files", [])):
        for part in ("contents",):
            scan(file.get(part, {}).get("httpHeaders", []),
                 ("storage", "files", index, part, "httpHeaders"), lambda h: h.get("name"))
        for aindex, res in enumerate(file.get("append", [])):
            scan(res.get("httpHeaders", []),
                 ("storage", "files", index, "append", aindex, "httpHeaders"),
                 lambda h: h.get("name"))
    scan(storage.get("filesystems", []), ("storage", "filesystems"), lambda f: f.get("device"))
    scan(storage.get("luks", []), ("storage", "luks"), lambda x: x.get("name"))
    scan(storage.get("raid", []), ("storage", "raid"), lambda x: x.get("name"))
    units = cfg.get("systemd", {}).get("units", [])
    scan(units, ("systemd", "units"), lambda u: u.get("name"))
    for index, unit in enumerate(units):
        scan(unit.get("dropins", []), ("systemd", "units", index, "dropins"),
             lambda d: d.get("name"))


def partition_key(part: dict[str, Any]) -> str:
    """Ignition's merge/duplicate key for a partition: its number, else its label."""
    if part.get("number"):
        return f"number:{part['number']}"
    return f"label:{part.get('label', '')}"


def _systemd_conflicts(report: Report, cfg: dict[str, Any]) -> None:
    unit_paths = set()
    for unit in cfg.get("systemd", {}).get("units", []):
        if unit.get("contents"):
            unit_paths.add("/etc/systemd/system/" + unit.get("name", ""))
        for dropin in unit.get("dropins", []):
            if dropin.get("contents"):
                unit_paths.add(f"/etc/systemd/system/{unit.get('name', '')}.d/{dropin['name']}")
    storage = cfg.get("storage", {})
    for kind in ("files", "directories", "links"):
        for index, node in enumerate(storage.get(kind, [])):
            if node.get("path") in unit_paths:
                report.error(("storage", kind, index, "path"), M.PATH_CONFLICTS_SYSTEMD)


def validate(cfg: dict[str, Any], minor: int) -> Report:
    """All semantic checks for spec 3.``minor``; paths only, positions come later."""
    report = Report()
    if minor >= 4:
        _systemd_conflicts(report, cfg)
    ign = cfg.get("ignition", {})
    config = ign.get("config", {})
    for index, res in enumerate(config.get("merge", [])):
        check_resource(report, ("ignition", "config", "merge", index), res, minor, True)
    if "replace" in config:
        check_resource(report, ("ignition", "config", "replace"), config["replace"], minor,
                       False)
    for index, res in enumerate(ign.get("security", {}).get("tls", {})
                                .get("certificateAuthorities", [])):
        check_resource(report, ("ignition", "security", "tls", "certificateAuthorities", index),
                       res, minor, True)
    _check_storage(report, cfg.get("storage", {}), minor)
    _check_systemd(report, cfg.get("systemd", {}))
    _duplicates(report, cfg)
    return report
