"""The Ignition v3 config schema, per spec version, as data.

Each struct lists its JSON fields with the spec version that introduced them. The type
names match Ignition's generated Go types so that type errors can be worded exactly as
``ignition-validate`` words them ("json: cannot unmarshal string into Go struct field
File.storage.files.mode of type int"). Configs are kept as plain dicts; this table is what
gives them shape.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0")
LATEST = SUPPORTED_VERSIONS[-1]


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@dataclass(frozen=True)
class T:
    """A field type: ``kind`` is string/int/bool/alias/struct/list."""

    kind: str
    name: str = ""
    elem: T | None = None

    def go_name(self) -> str:
        if self.kind in ("string", "int", "bool"):
            return self.kind
        if self.kind == "list":
            assert self.elem is not None
            return "[]" + self.elem.go_name()
        return "types." + self.name


S = T("string")
INT = T("int")
BOOL = T("bool")


def alias(name: str) -> T:
    return T("alias", name)


def struct(name: str) -> T:
    return T("struct", name)


def lst(elem: T) -> T:
    return T("list", elem=elem)


# Field tables: name -> (type, first spec minor version that has it).
_NODE = {"group": (struct("NodeGroup"), 0), "overwrite": (BOOL, 0), "path": (S, 0),
         "user": (struct("NodeUser"), 0)}

_STRUCTS: dict[str, dict[str, tuple[T, int]]] = {
    "Config": {"ignition": (struct("Ignition"), 0), "kernelArguments":
               (struct("KernelArguments"), 3), "passwd": (struct("Passwd"), 0),
               "storage": (struct("Storage"), 0), "systemd": (struct("Systemd"), 0)},
    "Ignition": {"config": (struct("IgnitionConfig"), 0), "proxy": (struct("Proxy"), 1),
                 "security": (struct("Security"), 0), "timeouts": (struct("Timeouts"), 0),
                 "version": (S, 0)},
    "IgnitionConfig": {"merge": (lst(struct("Resource")), 0),
                       "replace": (struct("Resource"), 0)},
    "Resource": {"compression": (S, 1), "httpHeaders": (lst(struct("HTTPHeader")), 1),
                 "source": (S, 0), "verification": (struct("Verification"), 0)},
    "FileContents": {"compression": (S, 0), "source": (S, 0),
                     "verification": (struct("Verification"), 0)},
    "HTTPHeader": {"name": (S, 1), "value": (S, 1)},
    "Verification": {"hash": (S, 0)},
    "Proxy": {"httpProxy": (S, 1), "httpsProxy": (S, 1),
              "noProxy": (lst(alias("NoProxyItem")), 1)},
    "Security": {"tls": (struct("TLS"), 0)},
    "TLS": {"certificateAuthorities": (lst(struct("Resource")), 0)},
    "Timeouts": {"httpResponseHeaders": (INT, 0), "httpTotal": (INT, 0)},
    "Storage": {"directories": (lst(struct("Directory")), 0), "disks": (lst(struct("Disk")), 0),
                "files": (lst(struct("File")), 0),
                "filesystems": (lst(struct("Filesystem")), 0),
                "links": (lst(struct("Link")), 0), "luks": (lst(struct("Luks")), 2),
                "raid": (lst(struct("Raid")), 0)},
    "Directory": {**_NODE, "mode": (INT, 0)},
    "File": {**_NODE, "append": (lst(struct("Resource")), 0),
             "contents": (struct("Resource"), 0), "mode": (INT, 0)},
    "Link": {**_NODE, "hard": (BOOL, 0), "target": (S, 0)},
    "NodeUser": {"id": (INT, 0), "name": (S, 0)},
    "NodeGroup": {"id": (INT, 0), "name": (S, 0)},
    "Disk": {"device": (S, 0), "partitions": (lst(struct("Partition")), 0),
             "wipeTable": (BOOL, 0)},
    "Partition": {"guid": (S, 0), "label": (S, 0), "number": (INT, 0), "resize": (BOOL, 2),
                  "shouldExist": (BOOL, 0), "sizeMiB": (INT, 0), "startMiB": (INT, 0),
                  "typeGuid": (S, 0), "wipePartitionEntry": (BOOL, 0)},
    "Filesystem": {"device": (S, 0), "format": (S, 0), "label": (S, 0),
                   "mountOptions": (lst(alias("MountOption")), 1),
                   "options": (lst(alias("FilesystemOption")), 0), "path": (S, 0),
                   "uuid": (S, 0), "wipeFilesystem": (BOOL, 0)},
    "Raid": {"devices": (lst(alias("Device")), 0), "level": (S, 0), "name": (S, 0),
             "options": (lst(alias("RaidOption")), 0), "spares": (INT, 0)},
    "Luks": {"cex": (struct("Cex"), 5), "clevis": (struct("Clevis"), 2), "device": (S, 2),
             "discard": (BOOL, 4), "keyFile": (struct("Resource"), 2), "label": (S, 2),
             "name": (S, 2), "openOptions": (lst(alias("OpenOption")), 4),
             "options": (lst(alias("LuksOption")), 2), "uuid": (S, 2),
             "wipeVolume": (BOOL, 2)},
    "Cex": {"enabled": (BOOL, 5)},
    "Clevis": {"custom": (struct("ClevisCustom"), 2), "tang": (lst(struct("Tang")), 2),
               "threshold": (INT, 2), "tpm2": (BOOL, 2)},
    "ClevisCustom": {"config": (S, 2), "needsNetwork": (BOOL, 2), "pin": (S, 2)},
    "Tang": {"advertisement": (S, 4), "thumbprint": (S, 2), "url": (S, 2)},
    "Systemd": {"units": (lst(struct("Unit")), 0)},
    "Unit": {"contents": (S, 0), "dropins": (lst(struct("Dropin")), 0), "enabled": (BOOL, 0),
             "mask": (BOOL, 0), "name": (S, 0)},
    "Dropin": {"contents": (S, 0), "name": (S, 0)},
    "Passwd": {"groups": (lst(struct("PasswdGroup")), 0),
               "users": (lst(struct("PasswdUser")), 0)},
    "PasswdUser": {"gecos": (S, 0), "groups": (lst(alias("Group")), 0), "homeDir": (S, 0),
                   "name": (S, 0), "noCreateHome": (BOOL, 0), "noLogInit": (BOOL, 0),
                   "noUserGroup": (BOOL, 0), "passwordHash": (S, 0), "primaryGroup": (S, 0),
                   "shell": (S, 0), "shouldExist": (BOOL, 2),
                   "sshAuthorizedKeys": (lst(alias("SSHAuthorizedKey")), 0),
                   "system": (BOOL, 0), "uid": (INT, 0)},
    "PasswdGroup": {"gid": (INT, 0), "name": (S, 0), "passwordHash": (S, 0),
                    "shouldExist": (BOOL, 2), "system": (BOOL, 0)},
    "KernelArguments": {"shouldExist": (lst(alias("KernelArgument")), 3),
                        "shouldNotExist": (lst(alias("KernelArgument")), 3)},
}

# Spec 3.0 used separate reference types where 3.1 unified them as Resource.
_V30_RENAMES = {("IgnitionConfig", "merge"): "ConfigReference",
                ("IgnitionConfig", "replace"): "ConfigReference",
                ("TLS", "certificateAuthorities"): "CaReference",
                ("File", "contents"): "FileContents", ("File", "append"): "FileContents"}
_V30_REF_FIELDS = {"source": (S, 0), "verification": (struct("Verification"), 0)}


def fields(struct_name: str, minor: int) -> dict[str, T]:
    """The fields ``struct_name`` has in spec 3.``minor``."""
    if struct_name in ("ConfigReference", "CaReference"):
        table = _V30_REF_FIELDS
    else:
        table = _STRUCTS[struct_name]
    return {name: typ for name, (typ, since) in table.items() if since <= minor}


def field_type(struct_name: str, field: str, minor: int) -> T | None:
    """Type of ``field`` in ``struct_name`` for spec 3.``minor``, or None if unknown."""
    typ = fields(struct_name, minor).get(field)
    if typ is None:
        return None
    if minor == 0 and (struct_name, field) in _V30_RENAMES:
        renamed = struct(_V30_RENAMES[(struct_name, field)])
        return lst(renamed) if typ.kind == "list" else renamed
    return typ
