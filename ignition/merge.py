"""Ignition's config merge rules, on plain dict configs of the latest spec.

Structs merge field by field and a value set in the child wins; an unset value keeps the
parent's. Lists of structs are keyed (files by path, units by name, users by name, ...):
entries with the same key merge in place and new child entries are appended. Files,
directories and links share one key space, so a child's directory replaces a parent's
file at the same path. A few lists (file appends, mount and format options) are plain
concatenations, and an HTTP header given by the child without a value removes it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flotilla.ignition import schema
from flotilla.ignition.validate import partition_key

_MINOR = schema.version_tuple(schema.LATEST)[1]

KEYS: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("IgnitionConfig", "merge"): lambda r: r.get("source"),
    ("TLS", "certificateAuthorities"): lambda r: r.get("source"),
    ("Resource", "httpHeaders"): lambda h: h.get("name"),
    ("Storage", "disks"): lambda d: d.get("device"),
    ("Disk", "partitions"): partition_key,
    ("Storage", "filesystems"): lambda f: f.get("device"),
    ("Storage", "raid"): lambda r: r.get("name"),
    ("Storage", "luks"): lambda x: x.get("name"),
    ("Clevis", "tang"): lambda t: t.get("url"),
    ("Systemd", "units"): lambda u: u.get("name"),
    ("Unit", "dropins"): lambda d: d.get("name"),
    ("Passwd", "users"): lambda u: u.get("name"),
    ("Passwd", "groups"): lambda g: g.get("name"),
}
APPEND_ONLY = {("File", "append"), ("Filesystem", "options"), ("Filesystem", "mountOptions"),
               ("Raid", "options"), ("Luks", "options"), ("Luks", "openOptions")}
NODE_LISTS = ("directories", "files", "links")


def merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Return ``child`` merged over ``parent``; neither input is modified."""
    return _merge_struct("Config", copy.deepcopy(parent), copy.deepcopy(child))


def _merge_struct(name: str, parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    result = dict(parent)
    if name == "Storage":
        _merge_nodes(result, child)
    if name == "KernelArguments":
        _merge_kargs(result, child)
        return result
    for key, value in child.items():
        if name == "Storage" and key in NODE_LISTS:
            continue
        typ = schema.field_type(name, key, _MINOR)
        if typ is None or key not in result:
            result[key] = value
        elif typ.kind == "struct":
            result[key] = _merge_struct(typ.name, result[key], value)
        elif typ.kind == "list":
            result[key] = _merge_list(name, key, typ, result[key], value)
        else:
            result[key] = value
    return result


def _merge_list(owner: str, key: str, typ: schema.T, parent: list[Any],
                child: list[Any]) -> list[Any]:
    if (owner, key) in APPEND_ONLY:
        return parent + child
    assert typ.elem is not None
    if typ.elem.kind != "struct":
        return parent + [item for item in child if item not in parent]
    key_of = KEYS.get((owner, key))
    if key_of is None:
        return parent + child
    result = list(parent)
    index = {key_of(item): pos for pos, item in enumerate(result)}
    removed: set[int] = set()
    for item in child:
        k = key_of(item)
        if k in index:
            pos = index[k]
            if (owner, key) == ("Resource", "httpHeaders") and item.get("value") is None:
                removed.add(pos)
                continue
            result[pos] = _merge_struct(typ.elem.name, result[pos], item)
        else:
            index[k] = len(result)
            result.append(item)
    return [item for pos, item in enumerate(result) if pos not in removed]


def _merge_nodes(result: dict[str, Any], child: dict[str, Any]) -> None:
    """Files, directories and links: one key space (the path) across the three lists."""
    struct_of = {"directories": "Directory", "files": "File", "links": "Link"}
    child_kind = {node.get("path"): kind for kind in NODE_LISTS
                  for node in child.get(kind, [])}
    for kind in NODE_LISTS:
        parent_nodes = result.get(kind, [])
        merged: list[dict[str, Any]] = []
        positions: dict[Any, int] = {}
        for node in parent_nodes:
            owner = child_kind.get(node.get("path"))
            if owner is not None and owner != kind:
                continue  # the child redefines this path as another kind of node
            positions[node.get("path")] = len(merged)
            merged.append(node)
        for node in child.get(kind, []):
            path = node.get("path")
            if path in positions:
                pos = positions[path]
                merged[pos] = _merge_struct(struct_of[kind], merged[pos], node)
            else:
                positions[path] = len(merged)
                merged.append(node)
        if merged or kind in result:
            result[kind] = merged


def _merge_kargs(result: dict[str, Any], child: dict[str, Any]) -> None:
    for key, other in (("shouldExist", "shouldNotExist"), ("shouldNotExist", "shouldExist")):
        additions = child.get(key, [])
        if not additions:
            continue
        if other in result:
            result[other] = [arg for arg in result[other] if arg not in additions]
        current = result.get(key, [])
        result[key] = current + [arg for arg in additions if arg not in current]
