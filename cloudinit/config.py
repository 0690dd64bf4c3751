"""The typed cloud-config, decoded from the raw YAML tree by the schema.

String fields keep the text as written (``0644``, ``off`` and ``true`` stay strings). Bool
fields take the YAML 1.1 booleans, int and float fields their numbers. Values of the wrong
kind are left at their zero value here; the validator reports them, and the command refuses
to apply a config that has any. ``write_files`` content is decoded at this point, as the
original did, so an undecodable file is caught before anything is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import schema
from .decode import ContentError, decode_content
from .rawyaml import _TRUE, Node


@dataclass
class User:
    name: str = ""
    passwd: str = ""
    ssh_authorized_keys: list[str] = field(default_factory=list)
    coreos_ssh_import_github: str = ""
    coreos_ssh_import_github_users: list[str] = field(default_factory=list)
    coreos_ssh_import_url: str = ""
    gecos: str = ""
    homedir: str = ""
    no_create_home: bool = False
    primary_group: str = ""
    groups: list[str] = field(default_factory=list)
    no_user_group: bool = False
    system: bool = False
    no_log_init: bool = False
    shell: str = ""


@dataclass
class WriteFile:
    path: str = ""
    content: bytes = b""
    encoding: str = ""
    owner: str = ""
    permissions: str = ""
    line: int = 0

    @property
    def mode(self) -> int:
        return int(self.permissions, 8) if self.permissions else 0o644


@dataclass
class DropIn:
    name: str = ""
    content: str = ""


@dataclass
class Unit:
    name: str = ""
    mask: bool = False
    enable: bool = False
    runtime: bool = False
    content: str = ""
    command: str = ""
    drop_ins: list[DropIn] = field(default_factory=list)


@dataclass
class Update:
    reboot_strategy: str = ""
    group: str = ""
    server: str = ""


@dataclass
class Oem:
    id: str = ""
    name: str = ""
    version_id: str = ""
    home_url: str = ""
    bug_report_url: str = ""


EnvSection = list[tuple[schema.Field, object]]
"""The set fields of etcd/etcd2/fleet/flannel/locksmith, in schema (declaration) order."""


@dataclass
class CoreOS:
    etcd: EnvSection = field(default_factory=list)
    etcd2: EnvSection = field(default_factory=list)
    flannel: EnvSection = field(default_factory=list)
    fleet: EnvSection = field(default_factory=list)
    locksmith: EnvSection = field(default_factory=list)
    oem: Oem = field(default_factory=Oem)
    update: Update = field(default_factory=Update)
    units: list[Unit] = field(default_factory=list)


@dataclass
class CloudConfig:
    hostname: str = ""
    ssh_authorized_keys: list[str] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    write_files: list[WriteFile] = field(default_factory=list)
    manage_etc_hosts: str = ""
    coreos: CoreOS = field(default_factory=CoreOS)


def _scalar(node: Node | None, kind: str) -> object:
    """The typed value of a scalar node, or the zero value when the kind does not fit."""
    zero: dict[str, object] = {schema.STRING: "", schema.BOOL: False, schema.INT: 0,
                               schema.FLOAT: 0.0}
    if node is None:
        return zero[kind]
    if kind == schema.STRING:
        return node.text if node.kind in ("str", "int", "float", "bool") else ""
    if kind == schema.BOOL:
        return node.text in _TRUE if node.kind == "bool" else False
    if kind == schema.INT:
        return _to_int(node.text) if node.kind == "int" else 0
    if kind == schema.FLOAT:
        if node.kind == "int":
            return float(_to_int(node.text))
        return float(node.text.replace("_", "")) if node.kind == "float" else 0.0
    raise ValueError(kind)


def _to_int(text: str) -> int:
    plain = text.replace("_", "")
    sign = -1 if plain.startswith("-") else 1
    digits = plain.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567":
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _strings(node: Node | None) -> list[str]:
    if node is None or node.kind != "seq":
        return []
    return [item.text for item in node.items if item.kind in ("str", "int", "float", "bool")]


def _maps(node: Node | None) -> list[Node]:
    if node is None or node.kind != "seq":
        return []
    return [item for item in node.items if item.kind == "map"]


def _fill(target: object, node: Node | None, fields: tuple[schema.Field, ...]) -> None:
    if node is None or node.kind != "map":
        return
    for item in fields:
        if item.kind in (schema.STRING, schema.BOOL, schema.INT, schema.FLOAT):
            if hasattr(target, item.name):
                setattr(target, item.name, _scalar(node.get(item.name), item.kind))
        elif item.kind == schema.STRINGS:
            setattr(target, item.name, _strings(node.get(item.name)))


def _env_section(node: Node | None, fields: tuple[schema.Field, ...]) -> EnvSection:
    if node is None or node.kind != "map":
        return []
    out: EnvSection = []
    for item in fields:
        value = _scalar(node.get(item.name), item.kind)
        if value not in ("", 0, 0.0, False):  # zero values are omitted, as the original did
            out.append((item, value))
    return out


def from_tree(tree: Node | None) -> CloudConfig:
    """Decode a validated tree. Raises ContentError for undecodable file content."""
    cfg = CloudConfig()
    if tree is None or tree.kind != "map":
        return cfg
    cfg.hostname = str(_scalar(tree.get("hostname"), schema.STRING))
    cfg.manage_etc_hosts = str(_scalar(tree.get("manage_etc_hosts"), schema.STRING))
    cfg.ssh_authorized_keys = _strings(tree.get("ssh_authorized_keys"))
    for node in _maps(tree.get("users")):
        user = User()
        _fill(user, node, schema.USER)
        cfg.users.append(user)
    for node in _maps(tree.get("write_files")):
        wf = WriteFile(line=node.line)
        _fill(wf, node, tuple(f for f in schema.FILE if f.name != "content"))
        content = node.get("content")
        raw = b""
        if content is not None and content.kind != "null":
            raw = content.raw_bytes if content.raw_bytes is not None else content.text.encode()
        try:
            wf.content = decode_content(raw, wf.encoding)
        except ContentError as err:
            raise ContentError(f"line {node.key_line('content')}: write_files {wf.path}: "
                               f"{err}") from err
        cfg.write_files.append(wf)
    coreos = tree.get("coreos")
    if coreos is not None and coreos.kind == "map":
        c = cfg.coreos
        c.etcd = _env_section(coreos.get("etcd"), schema.ETCD)
        c.etcd2 = _env_section(coreos.get("etcd2"), schema.ETCD2)
        c.flannel = _env_section(coreos.get("flannel"), schema.FLANNEL)
        c.fleet = _env_section(coreos.get("fleet"), schema.FLEET)
        c.locksmith = _env_section(coreos.get("locksmith"), schema.LOCKSMITH)
        _fill(c.oem, coreos.get("oem"), schema.OEM)
        _fill(c.update, coreos.get("update"), schema.UPDATE)
        for node in _maps(coreos.get("units")):
            unit = Unit()
            _fill(unit, node, schema.UNIT)
            for drop in _maps(node.get("drop_ins")):
                d = DropIn()
                _fill(d, drop, (schema.Field("name", schema.STRING),
                                schema.Field("content", schema.STRING)))
                unit.drop_ins.append(d)
            c.units.append(unit)
    return cfg
