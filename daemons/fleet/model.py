"""Fleet's unit model: names, unit files, ``[X-Fleet]`` requirements and specifiers.

Everything here is pure: it parses and validates text and returns values, so the API,
the engine and fleetctl agree on one reading of a unit and every rule is testable
without a store or a systemd. Unit files are parsed by hand because the format fleet
stores (an ordered list of section/name/value options, repeated keys kept) is not what
``configparser`` models.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_NAME_LENGTH = 256
MAX_LINE_LENGTH = 2048

VALID_UNIT_TYPES = frozenset(
    {
        "automount", "busname", "device", "mount", "path", "scope", "service",
        "slice", "snapshot", "socket", "swap", "target", "timer",
    }
)
TEMPLATE_UNIT_TYPES = frozenset({"path", "service", "socket", "target", "timer"})
NAME_CHARS = re.compile(r"^[A-Za-z0-9:_.@\\-]+$")

DESIRED_STATES = ("inactive", "loaded", "launched")
STATE_RANK = {state: rank for rank, state in enumerate(DESIRED_STATES)}

TRUTHY = frozenset({"true", "yes", "1", "on", "t"})

# Requirement keys fleet accepts, with the legacy spellings mapped onto the current ones.
REQUIREMENT_ALIASES = {
    "MachineID": "MachineID",
    "X-ConditionMachineID": "MachineID",
    "X-ConditionMachineBootID": "MachineID",
    "MachineOf": "MachineOf",
    "X-ConditionMachineOf": "MachineOf",
    "MachineMetadata": "MachineMetadata",
    "X-ConditionMachineMetadata": "MachineMetadata",
    "Conflicts": "Conflicts",
    "X-Conflicts": "Conflicts",
    "Global": "Global",
    "Replaces": "Replaces",
}


class UnitError(ValueError):
    """A unit name, unit file or requirement set that fleet refuses."""


@dataclass(frozen=True)
class UnitOption:
    section: str
    name: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"section": self.section, "name": self.name, "value": self.value}


# --------------------------------------------------------------------------- names


def validate_name(name: str) -> None:
    """Raise UnitError with fleet's wording if ``name`` is not a usable unit name."""
    if not name:
        raise UnitError("unit name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise UnitError(f"unit name exceeds maximum length ({MAX_NAME_LENGTH})")
    dot = name.rfind(".")
    if dot == -1:
        raise UnitError('unit name must contain "."')
    if dot == len(name) - 1:
        raise UnitError('unit name cannot end in "."')
    suffix = name[dot + 1 :]
    if suffix not in VALID_UNIT_TYPES:
        raise UnitError(f'invalid unit type: "{suffix}"')
    stem = name[:dot]
    if not stem:
        raise UnitError("unit name must have a name before its type")
    for char in stem:
        if not NAME_CHARS.match(char):
            raise UnitError(f"invalid character {char!r} in unit name")
    if name.startswith("@"):
        raise UnitError('unit name cannot start in "@"')
    if "@" in stem and suffix not in TEMPLATE_UNIT_TYPES:
        raise UnitError(f'unit type "{suffix}" cannot be a template or instance')


@dataclass(frozen=True)
class UnitName:
    """The parts of a unit name that specifiers and template lookup need."""

    full: str
    prefix: str  # part before "@" (or the whole stem)
    instance: str  # part between "@" and the type ("" for non-instances)
    unit_type: str

    @property
    def stem(self) -> str:
        return self.full[: -(len(self.unit_type) + 1)]

    @property
    def is_template(self) -> bool:
        return "@" in self.stem and self.instance == ""

    @property
    def is_instance(self) -> bool:
        return self.instance != ""

    @property
    def template(self) -> str:
        """Name of the template this instance comes from (``foo@.service``)."""
        return f"{self.prefix}@.{self.unit_type}"


def parse_name(name: str) -> UnitName:
    dot = name.rfind(".")
    stem, unit_type = (name[:dot], name[dot + 1 :]) if dot != -1 else (name, "")
    if "@" in stem:
        prefix, _, instance = stem.partition("@")
    else:
        prefix, instance = stem, ""
    return UnitName(full=name, prefix=prefix, instance=instance, unit_type=unit_type)


def expand_specifiers(value: str, name: str) -> str:
    """Replace ``%n %N %p %i`` (and ``%%``) the way systemd would for this unit name."""
    parts = parse_name(name)
    table = {"n": parts.full, "N": parts.stem, "p": parts.prefix, "i": parts.instance, "%": "%"}

    def substitute(match: re.Match[str]) -> str:
        return table.get(match.group(1), match.group(0))

    return re.sub(r"%(.)", substitute, value)


# --------------------------------------------------------------------------- unit files


def parse_unit_file(text: str) -> list[UnitOption]:
    """Parse systemd unit file text into an ordered option list.

    Raises UnitError naming the line for anything systemd would not read the same way.
    """
    options: list[UnitOption] = []
    section: str | None = None
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if len(raw.encode()) > MAX_LINE_LENGTH:
            raise UnitError(f"line {number}: longer than {MAX_LINE_LENGTH} bytes")
        line = raw.strip() if not pending else raw.rstrip()
        if not pending:
            pending_line = number
            if not line or line[0] in "#;":
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise UnitError(f"line {pending_line}: malformed section header {line!r}")
            section = line[1:-1]
            continue
        if "=" not in line:
            raise UnitError(f"line {pending_line}: expected Key=Value, got {line!r}")
        if section is None:
            raise UnitError(f"line {pending_line}: option outside of any [Section]")
        key, _, value = line.partition("=")
        key = key.strip()
        if not key:
            raise UnitError(f"line {pending_line}: empty option name")
        options.append(UnitOption(section, key, value.strip()))
    if pending:
        raise UnitError(f"line {pending_line}: continuation at end of file")
    return options


def serialize_options(options: Sequence[UnitOption]) -> str:
    """Render options grouped by section, in first-seen section order (fleet's form)."""
    order: list[str] = []
    grouped: dict[str, list[UnitOption]] = {}
    for option in options:
        if option.section not in grouped:
            order.append(option.section)
            grouped[option.section] = []
        grouped[option.section].append(option)
    chunks = []
    for section in order:
        lines = [f"[{section}]"] + [f"{o.name}={o.value}" for o in grouped[section]]
        chunks.append("\n".join(lines) + "\n")
    return "\n".join(chunks)


def unit_hash(options: Sequence[UnitOption]) -> str:
    """SHA1 hex of the serialised unit: a unit's identity, as fleet defines it."""
    return hashlib.sha1(serialize_options(options).encode()).hexdigest()


def options_from_json(items: object) -> list[UnitOption]:
    """Decode the API's ``options`` array, naming the offending element on error."""
    if not isinstance(items, list):
        raise UnitError("options: must be a list of {section,name,value} objects")
    result = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise UnitError(f"options[{index}]: must be an object")
        values = []
        for key in ("section", "name", "value"):
            value = item.get(key)
            if key == "value" and value is None:
                # fleet's Go clients omit empty fields: "ExecStartPre=" comes as no value
                value = ""
            if not isinstance(value, str):
                raise UnitError(f"options[{index}].{key}: must be a string")
            values.append(value)
        if not values[0] or not values[1]:
            raise UnitError(f"options[{index}]: section and name must not be empty")
        result.append(UnitOption(*values))
    return result


def description(options: Iterable[UnitOption]) -> str:
    for option in options:
        if option.section == "Unit" and option.name == "Description":
            return option.value
    return ""


def has_install_section(options: Iterable[UnitOption]) -> bool:
    return any(option.section == "Install" for option in options)


# --------------------------------------------------------------------------- requirements


def split_multivalue(value: str) -> list[str]:
    """Split ``"a=b" "c=d"`` into separate values; anything else stays one value."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return re.findall(r'"([^"]*)"', value)
    return [value]


@dataclass(frozen=True)
class Requirements:
    """The scheduling constraints of one unit, specifiers already expanded."""

    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()
    metadata: Mapping[str, frozenset[str]] = field(default_factory=dict)
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    is_global: bool = False


def raw_requirements(options: Iterable[UnitOption]) -> dict[str, list[str]]:
    """Collect ``[X-Fleet]`` values by canonical key; unknown keys raise UnitError."""
    found: dict[str, list[str]] = {}
    for option in options:
        if option.section != "X-Fleet":
            continue
        key = REQUIREMENT_ALIASES.get(option.name)
        if key is None:
            raise UnitError(
                f'unrecognized requirement in [X-Fleet] section: "{option.name}"'
            )
        found.setdefault(key, []).extend(split_multivalue(option.value))
    return found


def requirements(name: str, options: Iterable[UnitOption]) -> Requirements:
    """Read the scheduling requirements of unit ``name`` from its options."""
    raw = {
        key: [expand_specifiers(value, name) for value in values]
        for key, values in raw_requirements(options).items()
    }
    machine_ids = [v for v in raw.get("MachineID", []) if v]
    metadata: dict[str, set[str]] = {}
    for entry in raw.get("MachineMetadata", []):
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value or "=" in value:
            continue  # fleet ignores malformed metadata entries
        metadata.setdefault(key, set()).add(value)
    global_values = raw.get("Global", [])
    return Requirements(
        machine_id=machine_ids[0] if machine_ids else None,
        machine_of=tuple(v for v in raw.get("MachineOf", []) if v),
        metadata={key: frozenset(values) for key, values in metadata.items()},
        conflicts=tuple(word for v in raw.get("Conflicts", []) for word in v.split()),
        replaces=tuple(word for v in raw.get("Replaces", []) for word in v.split()),
        is_global=bool(global_values) and global_values[-1].strip().lower() in TRUTHY,
    )


def validate_requirements(name: str, options: Sequence[UnitOption]) -> Requirements:
    """Return the unit's requirements, or raise UnitError for combinations fleet rejects."""
    req = requirements(name, options)
    for peer in req.machine_of:
        for pattern in req.conflicts:
            if glob_match(pattern, peer):
                raise UnitError(
                    f'unresolvable requirements: peer "{peer}" matches conflict "{pattern}"'
                )
        for pattern in req.replaces:
            if glob_match(pattern, peer):
                raise UnitError(
                    f'unresolvable requirements: peer "{peer}" matches replace "{pattern}"'
                )
    has_target = req.machine_id is not None
    rules = [
        (has_target and bool(req.machine_of), "MachineID cannot be used with MachineOf"),
        (has_target and bool(req.conflicts), "MachineID cannot be used with Conflicts"),
        (has_target and req.is_global, "MachineID cannot be used with Global"),
        (has_target and bool(req.replaces), "MachineID cannot be used with Replaces"),
        (req.is_global and bool(req.machine_of), "Global cannot be used with MachineOf"),
        (req.is_global and bool(req.replaces), "Global cannot be used with Replaces"),
        (bool(req.conflicts) and bool(req.replaces), "Conflicts cannot be used with Replaces"),
    ]
    for broken, message in rules:
        if broken:
            raise UnitError(message)
    return req


def validate_unit(name: str, options: Sequence[UnitOption]) -> Requirements:
    """Everything the API checks before accepting a new unit."""
    validate_name(name)
    if not options:
        raise UnitError("unit has no options")
    return validate_requirements(name, options)


# --------------------------------------------------------------------------- globs

_glob_cache: dict[str, re.Pattern[str]] = {}


def _compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a shell glob (``* ? [a-z] [^x] [!x] \\c``) to a regex.

    Written out rather than using fnmatch because fleet's globs take ``[^...]`` for
    negation and never let ``*`` cross a ``/``.
    """
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("^", "!")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, name: str) -> bool:
    compiled = _glob_cache.get(pattern)
    if compiled is None:
        try:
            compiled = _compile_glob(pattern)
        except re.error:
            compiled = re.compile(re.escape(pattern) + r"\Z")
        _glob_cache[pattern] = compiled
    return compiled.match(name) is not None


# --------------------------------------------------------------------------- machines


def parse_metadata(text: str) -> dict[str, str]:
    """Parse fleet.conf's ``metadata="k=v,k2=v2"``: whitespace trimmed, last duplicate wins."""
    result: dict[str, str] = {}
    text = text.strip().strip('"')
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        key, value = key.strip().strip('"'), value.strip().strip('"')
        if not sep or not key:
            raise UnitError(f"metadata: entry {entry!r} is not key=value")
        result[key] = value
    return result


def short_id(machine_id: str) -> str:
    return machine_id[:8]
