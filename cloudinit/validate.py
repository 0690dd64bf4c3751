"""``flotilla-cloudinit --validate``: the original validator's rules and messages.

Entries come out rule by rule, in the original's rule order (discovery URL, encodings,
structure, allowed values, read-only paths, write_files under coreos) and, within a rule,
in document order. Line numbers come from the YAML parser itself, so they are exact even
after a syntax error (the original scanned the text with a regex and could be off).
After the original's rules come our own few checks that protect the machine when the
config is applied (paths with ``..``, unit names with ``/``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from . import flannel, schema
from .decode import ContentError, decode_content
from .rawyaml import Node, YamlSyntaxError, load
from .substitute import TOKENS
from .userdata import Kind, classify

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Entry:
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"

    @property
    def blocking(self) -> bool:
        """Whether this entry stops the config from being applied.

        Errors always do. A value of the wrong type does too: the original only warned and
        then silently ignored the value, which left machines half-configured.
        """
        return self.kind == ERROR or self.message.startswith("incorrect type")


_COMPATIBLE = {
    schema.STRING: {"str", "int", "float", "bool"},
    schema.STRUCT: {"map"},
    schema.FLOAT: {"float", "int"},
    schema.BOOL: {"bool"},
    schema.INT: {"int"},
    schema.STRINGS: {"seq"},
    schema.STRUCTS: {"seq"},
}
_ELEMENT = {schema.STRINGS: schema.STRING, schema.STRUCTS: schema.STRUCT}
UNIT_NAME = re.compile(
    r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|device|mount|automount|swap|timer|path"
    r"|slice|scope|network|netdev|link)$"
)


# What useradd accepts as a name and cannot mistake for an option: no leading "-", none
# of the characters that separate fields in /etc/passwd and /etc/group.
USER_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\$?$")
# hostnamed's rule for a static hostname: dot-separated labels of letters, digits and
# inner hyphens, 64 characters at most.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _valid_hostname(name: str) -> bool:
    return len(name) <= 64 and all(_HOST_LABEL.match(label) for label in name.split("."))


def validate_text(text: str) -> list[Entry]:
    """Validate user-data text. Scripts, Ignition configs and empty input have no entries."""
    kind = classify(text)
    if kind in (Kind.EMPTY, Kind.SCRIPT, Kind.IGNITION):
        return []
    if kind is not Kind.CLOUD_CONFIG:
        return [Entry(1, ERROR, 'must be "#cloud-config" or begin with "#!"')]
    try:
        tree = load(text)
    except YamlSyntaxError as err:
        return [Entry(err.line, ERROR, err.message)]
    return validate_tree(tree)


def validate_tree(tree: Node | None) -> list[Entry]:
    if tree is None:
        return []
    report: list[Entry] = []
    for rule in RULES:
        rule(tree, report)
    return report


def _child(node: Node | None, *path: str) -> Node | None:
    for key in path:
        if node is None or node.kind != "map":
            return None
        node = node.get(key)
    return node


def _elements(node: Node | None) -> list[Node]:
    return node.items if node is not None and node.kind == "seq" else []


def check_discovery_url(tree: Node, report: list[Entry]) -> None:
    node = _child(tree, "coreos", "etcd", "discovery")
    if node is not None and not _parses_as_request_uri(node.text):
        report.append(Entry(node.line, WARNING, "discovery URL is not valid"))


def _parses_as_request_uri(text: str) -> bool:
    """An absolute URI or an absolute path, as Go's url.ParseRequestURI accepts."""
    if text.startswith("/"):
        return " " not in text
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$", text))


def check_encoding(tree: Node, report: list[Entry]) -> None:
    for item in _elements(_child(tree, "write_files")):
        if item.kind != "map" or item.get("encoding") is None:
            continue
        encoding = item.get("encoding")
        content = item.get("content")
        data = content.raw_bytes if content is not None and content.raw_bytes is not None else (
            content.text.encode() if content is not None else b"")
        try:
            decode_content(data, encoding.text)
        except ContentError:
            line = item.key_line("content") if content is not None else item.line
            report.append(Entry(line, ERROR, f'content cannot be decoded as "{encoding.text}"'))


def check_structure(tree: Node, report: list[Entry]) -> None:
    _structure(tree, tree.line, "", schema.CLOUD_CONFIG.kind, schema.CLOUD_CONFIG, report)


def _structure(node: Node, line: int, name: str, want: str, field: schema.Field,
               report: list[Entry]) -> None:
    """Compare kinds with the schema. ``line`` is where the value is named: its key's line
    for a mapping entry, its dash's line for a list element."""
    if node.kind not in _COMPATIBLE[want]:
        report.append(Entry(line, WARNING, f'incorrect type for "{name}" (want {want})'))
        return
    if want == schema.STRUCT:
        last_line = {key: line for key, line, _value in node.entries}
        for key, line, value in node.entries:
            if last_line[key] != line:
                report.append(Entry(line, WARNING, f'duplicate key "{key}" (the one on line '
                                                   f'{last_line[key]} is used)'))
            sub = field.child(key)
            if sub is None:
                report.append(Entry(line, WARNING, f'unrecognized key "{key}"'))
                continue
            if sub.deprecated:
                report.append(Entry(line, WARNING, f'deprecated key "{key}" ({sub.deprecated})'))
            _structure(value, line, key, sub.kind, sub, report)
    elif want in _ELEMENT:
        for index, item in enumerate(node.items):
            _structure(item, item.line, f"{name}[{index}]", _ELEMENT[want], field, report)


def check_validity(tree: Node, report: list[Entry]) -> None:
    _validity(tree, tree.line, schema.CLOUD_CONFIG, schema.STRUCT, report)


def _validity(node: Node, line: int, field: schema.Field, want: str,
              report: list[Entry]) -> None:
    if (node.kind in ("str", "int", "float", "bool") and field.valid and node.text
            and not re.search(field.valid, node.text)):
        report.append(Entry(line, ERROR, f"invalid value {node.text}"))
    if want == schema.STRUCT and node.kind == "map":
        for key, key_line, value in node.entries:
            sub = field.child(key)
            if sub is not None:
                _validity(value, key_line, sub, sub.kind, report)
    elif want in _ELEMENT and node.kind == "seq":
        for item in node.items:
            _validity(item, item.line, field, _ELEMENT[want], report)


def check_write_files(tree: Node, report: list[Entry]) -> None:
    for item in _elements(_child(tree, "write_files")):
        path = _child(item, "path")
        if path is None:
            continue
        directory = posixpath.dirname(_clean(path.text)) if path.text else "."
        if directory.startswith("/usr"):
            report.append(Entry(item.key_line("path"), ERROR,
                                "file cannot be written to a read-only filesystem"))


def _clean(path: str) -> str:
    """Go's path.Clean, which unlike posixpath.normpath folds a leading ``//`` too."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def check_write_files_under_coreos(tree: Node, report: list[Entry]) -> None:
    node = _child(tree, "coreos")
    if node is not None and node.kind == "map" and node.get("write_files") is not None:
        report.append(Entry(node.key_line("write_files"), INFO,
                            "write_files doesn't belong under coreos"))


def check_safe_targets(tree: Node, report: list[Entry]) -> None:
    """Our own checks: every path and name the executor will touch must be safe to use."""
    for item in _elements(_child(tree, "write_files")):
        if item.kind != "map":
            continue
        path = item.get("path")
        if path is None or not path.text:
            report.append(Entry(item.line, ERROR, "write_files entry has no path"))
        elif not path.text.startswith("/") or ".." in path.text.split("/"):
            report.append(Entry(path.line, ERROR,
                                f'path "{path.text}" must be absolute and must not contain ".."'))
        elif path.text.endswith("/"):
            report.append(Entry(path.line, ERROR,
                                f'path "{path.text}" names a directory, not a file'))
    for item in _elements(_child(tree, "users")):
        if item.kind != "map":
            continue
        name = item.get("name")
        if name is not None and name.text and not USER_NAME.match(name.text):
            report.append(Entry(name.line, ERROR, f'invalid user name "{name.text}"'))
        home = item.get("homedir")
        if home is not None and home.text and (not home.text.startswith("/")
                                               or ".." in home.text.split("/")):
            report.append(Entry(home.line, ERROR, f'homedir "{home.text}" must be absolute '
                                                  'and must not contain ".."'))
    hostname = _child(tree, "hostname")
    if hostname is not None and hostname.kind not in ("null", "map", "seq") and hostname.text \
            and not _valid_hostname(hostname.text):
        report.append(Entry(hostname.line, ERROR, f'invalid hostname "{hostname.text}"'))
    for item in _elements(_child(tree, "coreos", "units")):
        if item.kind != "map":
            continue
        name = item.get("name")
        if name is None or not name.text:
            report.append(Entry(item.line, ERROR, "unit has no name"))
        elif not UNIT_NAME.match(name.text):
            report.append(Entry(name.line, ERROR, f'invalid unit name "{name.text}"'))
        for drop_in in _elements(item.get("drop_ins")):
            drop_name = _child(drop_in, "name")
            if drop_name is not None and ("/" in drop_name.text or drop_name.text in (".", "..")):
                report.append(Entry(drop_name.line, ERROR,
                                    f'invalid drop-in name "{drop_name.text}"'))
    hosts = _child(tree, "manage_etc_hosts")
    if hosts is not None and hosts.kind != "null" and hosts.text not in ("", "localhost"):
        report.append(Entry(hosts.line, ERROR, f"invalid value {hosts.text}"))


_FLANNEL_KEYS = frozenset(f.name for f in schema.FLANNEL)


def check_flannel(tree: Node, report: list[Entry]) -> None:
    """Our own check: a coreos.flannel value flanneld would refuse at start. A value with
    a ``$public_ipv4``-style token is checked only once substituted, when applied."""
    section = _child(tree, "coreos", "flannel")
    if section is None or section.kind != "map":
        return
    for key, line, value in section.entries:
        if key not in _FLANNEL_KEYS or value.kind not in (
                "str", "int", "float", "bool") or not value.text:
            continue
        if any("$" + token in value.text for token in TOKENS):
            continue
        problem = flannel.check(key, value.text)
        if problem:
            report.append(Entry(line, ERROR, problem))


RULES = (
    check_discovery_url,
    check_encoding,
    check_structure,
    check_validity,
    check_write_files,
    check_write_files_under_coreos,
    check_safe_targets,
    check_flannel,
)
