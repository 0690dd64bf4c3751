"""Parsing an Ignition config: version gate, type check, validation, translation.

``parse`` mirrors Ignition's ``config.Parse``: it reads the version first (2.x and unknown
versions are refused outright), then checks every value against the schema of that
version the way Go's JSON decoder would (first type error wins), warns about unknown keys,
runs the semantic checks and finally translates the config up to the latest spec. The
result is a plain dict holding only known keys, with JSON nulls dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flotilla.ignition import messages, schema, validate
from flotilla.ignition.jsonpos import JSONSyntaxError, Path, Positions, number_literal
from flotilla.ignition.jsonpos import parse as parse_json
from flotilla.ignition.report import ERROR, Entry, Report

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_INT64 = 2**63


class ConfigError(Exception):
    """A config that cannot be used; ``report`` holds the located entries, if any."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.report = report or Report()


@dataclass
class Parsed:
    config: dict[str, Any]
    version: str
    report: Report = field(default_factory=Report)
    positions: Positions | None = None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"


class _TypeChecker:
    """Walks values in document order like Go's decoder; records the first type error."""

    def __init__(self, positions: Positions, minor: int) -> None:
        self.positions = positions
        self.minor = minor
        self.error: Entry | None = None
        self.unused: list[Path] = []

    def mismatch(self, value: Any, typ: schema.T, owner: str, names: list[str],
                 path: Path) -> None:
        if self.error is not None:
            return
        kind = _kind(value)
        if kind == "number" and typ.kind == "int":
            kind = f"number {number_literal(value)}"
        where = (f"Go struct field {owner}.{'.'.join(names)}" if owner
                 else "Go value")
        message = f"json: cannot unmarshal {kind} into {where} of type {typ.go_name()}"
        if isinstance(value, (dict, list)):
            offset = self.positions.nodes.get(path, 0)
        else:
            offset = self.positions.ends.get(path, 0)
        self.error = Entry(ERROR, message, None, offset=offset)

    def check(self, value: Any, typ: schema.T, owner: str, names: list[str],
              path: Path) -> Any:
        """Return the normalised value (or None when it should be treated as absent)."""
        if value is None:
            return None
        kind = typ.kind
        if kind == "struct":
            if not isinstance(value, dict):
                self.mismatch(value, typ, owner, names, path)
                return None
            out: dict[str, Any] = {}
            for key, item in value.items():
                ftype = schema.field_type(typ.name, key, self.minor)
                if ftype is None:
                    self.unused.append((*path, key))
                    continue
                checked = self.check(item, ftype, typ.name, [*names, key], (*path, key))
                if checked is not None:
                    out[key] = checked
            return out
        if kind == "list":
            if not isinstance(value, list):
                self.mismatch(value, typ, owner, names, path)
                return None
            assert typ.elem is not None
            items = []
            for index, item in enumerate(value):
                checked = self.check(item, typ.elem, owner, names, (*path, index))
                if checked is None:
                    checked = {} if typ.elem.kind == "struct" else ""
                items.append(checked)
            return items
        if kind in ("string", "alias"):
            if not isinstance(value, str):
                self.mismatch(value, typ, owner, names, path)
                return None
            return value
        if kind == "int":
            if (isinstance(value, bool) or not isinstance(value, int)
                    or not -_INT64 <= value < _INT64):
                self.mismatch(value, typ, owner, names, path)
                return None
            return value
        if not isinstance(value, bool):
            self.mismatch(value, typ, owner, names, path)
            return None
        return value


def read_version(doc: Any, positions: Positions) -> str:
    """Ignition's version stub parse: return the semver string or raise ConfigError."""
    if not isinstance(doc, dict):
        report = Report([Entry(ERROR, "json: cannot unmarshal "
                               f"{_kind(doc)} into Go value of type util.versionStub", None,
                               offset=positions.nodes.get((), 0) if isinstance(doc, (dict, list))
                               else 0)])
        report.correlate(positions)
        raise ConfigError(messages.INVALID, report)
    ign = doc.get("ignition")
    version = ign.get("version") if isinstance(ign, dict) else None
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise ConfigError(messages.INVALID_VERSION)
    return version


def parse(raw: bytes | str) -> Parsed:
    """Parse, type-check, validate and translate a config; raise ConfigError if unusable.

    Non-fatal findings (warnings) are returned in ``Parsed.report``; a fatal report raises
    ConfigError carrying the report so callers can print it.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        raise ConfigError(messages.EMPTY)
    try:
        doc, positions = parse_json(text)
    except JSONSyntaxError as exc:
        report = Report([Entry(ERROR, exc.message, None, offset=exc.offset)])
        report.correlate(Positions(text))
        raise ConfigError(messages.INVALID, report) from None
    version = read_version(doc, positions)
    if version not in schema.SUPPORTED_VERSIONS:
        raise ConfigError(messages.UNKNOWN_VERSION)
    minor = schema.version_tuple(version)[1]
    checker = _TypeChecker(positions, minor)
    config = checker.check(doc, schema.struct("Config"), "", [], ()) or {}
    if checker.error is not None:
        report = Report([checker.error])
        report.correlate(positions)
        raise ConfigError(messages.INVALID, report)
    report = validate.validate(config, minor)
    for path in checker.unused:
        report.warning(path, messages.unused_key(str(path[-1])), at_key=True)
    report.correlate(positions)
    if report.fatal:
        raise ConfigError(messages.INVALID, report)
    return Parsed(translate_up(config, minor), version, report, positions)


def translate_up(config: dict[str, Any], minor: int) -> dict[str, Any]:
    """Carry a config of spec 3.``minor`` to the latest spec.

    Later specs only add fields, so the dict carries over unchanged except for the
    version and, before 3.6, file modes: older specs ignore setuid/setgid/sticky bits.
    """
    config.setdefault("ignition", {})["version"] = schema.LATEST
    if minor < 6:
        storage = config.get("storage", {})
        for kind in ("files", "directories"):
            for node in storage.get(kind, []):
                if "mode" in node:
                    node["mode"] &= 0o777
    return config


def empty_config() -> dict[str, Any]:
    return {"ignition": {"version": schema.LATEST}}
