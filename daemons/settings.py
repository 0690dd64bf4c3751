"""Daemon settings: the one set of value parsers, and one precedence rule.

The parsers are what every daemon and tool uses for a typed setting, so ``1m30s`` or
``yes`` means the same to fleetd, kvd, kvctl and the update engine:

* :func:`parse_duration`: a Go duration (``time.ParseDuration``: ``1h30m``, ``500ms``,
  ``1.5s``, ``-2s``, units ns us µs ms s m h) or, as our config files have always allowed,
  a plain number of seconds; ``inf``, ``nan`` and exponents are not durations;
* :func:`parse_go_bool`: Go's ``strconv.ParseBool`` exactly, for wire formats that must
  refuse what etcd refuses; :func:`parse_bool` adds ``yes``/``no``/``on``/``off`` in any
  case for config files, environment variables and flags.

They raise ``ValueError`` with a message that names the bad text; callers prefix it with
the setting's name and where it came from (file and line, variable, flag).

**A flag beats an environment variable, which beats the config file, which beats the
default.** :func:`resolve` implements that for daemons that declare their options as
:class:`Option` rows; the same row names the flag (accepted with one or two dashes, as
etcd and fleet do), the environment variable and the config-file key, so
``FLEET_AGENT_TTL=abc`` is reported as exactly that. :func:`read_config_lines` is the
``key = value`` file reader both it and fleet.conf use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting was malformed; the message names the option and its source."""


GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_WORDS_TRUE = frozenset({"1", "t", "true", "yes", "on"})
_WORDS_FALSE = frozenset({"0", "f", "false", "no", "off"})

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}
# Go's number: digits with an optional fraction, or a fraction alone (".5", "1.").
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"[-+]?(?:{_NUMBER}(?:ns|us|µs|μs|ms|s|m|h))+")
_SECONDS = re.compile(rf"[-+]?{_NUMBER}")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``1h30m``, ``500ms``) or a plain number of seconds."""
    stripped = text.strip()
    if _SECONDS.fullmatch(stripped):
        return float(stripped)
    if not _DURATION.fullmatch(stripped):
        raise ValueError(f"invalid duration {text!r}")
    seconds = sum(float(number) * _DURATION_UNITS[unit]
                  for number, unit in _DURATION_PART.findall(stripped))
    return -seconds if stripped.startswith("-") else seconds


def parse_go_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: exactly these spellings, nothing trimmed."""
    if text in GO_TRUE:
        return True
    if text in GO_FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def parse_bool(text: str, *, empty: bool | None = False) -> bool:
    """Go's spellings plus yes/no and on/off, in any case and with spaces trimmed.

    An empty value is ``empty`` (false: ``FLEET_DISABLE_ENGINE=`` turns it off), or an
    error where ``empty`` is None."""
    lowered = text.strip().lower()
    if lowered in _WORDS_TRUE:
        return True
    if lowered in _WORDS_FALSE:
        return False
    if not lowered and empty is not None:
        return empty
    raise ValueError(f"invalid boolean {text!r}")


@dataclass(frozen=True)
class Option:
    """One setting. ``name`` uses dashes (``agent-ttl``); env and file keys derive from it."""

    name: str
    default: Any = None
    convert: Callable[[str], Any] = str
    help: str = ""
    is_flag: bool = False  # a boolean flag given without a value
    flag_only: bool = False  # no environment variable or file key (--config, --version)

    def env_name(self, prefix: str) -> str:
        return prefix + self.name.upper().replace("-", "_")

    @property
    def file_key(self) -> str:
        return self.name.replace("-", "_")


def read_config_lines(path: Path) -> list[tuple[str, str, int]]:
    """``key = value`` lines (fleet.conf style) as (key, value, line number), in order.

    ``#`` and ``;`` start comments, a ``[section]`` header is skipped (fleet.conf has no
    sections; a header carries no meaning for global keys), and one pair of matching
    quotes around a value goes (fleet.conf quotes every string: ``agent_ttl="30s"``)."""
    lines: list[tuple[str, str, int]] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected key=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        lines.append((key.strip(), value, number))
    return lines


def _parse_config_file(path: Path) -> dict[str, tuple[str, int]]:
    """Config-file key (dashes as underscores) -> (value, line number); the last wins."""
    return {key.replace("-", "_"): (value, number)
            for key, value, number in read_config_lines(path)}


def _parse_flags(
    argv: Sequence[str], options: Mapping[str, Option]
) -> tuple[dict[str, str], list[str]]:
    """Parses ``-name value``, ``--name value``, ``--name=value`` and bare boolean flags."""
    found: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            rest.append(arg)
            continue
        name, sep, value = arg.lstrip("-").partition("=")
        option = options.get(name)
        if option is None:
            raise SettingsError(f"unknown flag {arg!r}")
        if not sep:
            if option.is_flag:
                value = "true"
            elif index < len(argv):
                value = argv[index]
                index += 1
            else:
                raise SettingsError(f"flag {arg!r} needs a value")
        found[name] = value
    return found, rest


def collect(
    options: Sequence[Option],
    argv: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = "",
    config_file: Path | None = None,
    config_flag: str | None = None,
    ignored_file_keys: frozenset[str] = frozenset(),
) -> dict[str, tuple[str, str]]:
    """The winning text of every option given: file key -> (text, where it came from).

    Where: ``--name`` for a flag, the variable's name, ``path:line`` for the file. The
    file is ``config_file`` if it exists, or the one the ``config_flag`` option names,
    which must exist. A file key that names no option is an error unless it is one of
    ``ignored_file_keys`` (settings a program accepts and no longer uses)."""
    environ = os.environ if environ is None else environ
    by_name = {opt.name: opt for opt in options}
    flags, rest = _parse_flags(argv, by_name)
    if rest:
        raise SettingsError(f"unexpected argument {rest[0]!r}")
    if config_flag is not None and config_flag in flags:
        config_file = Path(flags[config_flag])
        if not config_file.is_file():
            raise SettingsError(f"{config_file}: config file not found")
    file_values: dict[str, tuple[str, int]] = {}
    if config_file is not None and config_file.is_file():
        file_values = _parse_config_file(config_file)
        known = {opt.file_key for opt in options if not opt.flag_only} | ignored_file_keys
        for key, (_, line) in sorted(file_values.items(), key=lambda item: item[1][1]):
            if key not in known:
                raise SettingsError(f"{config_file}:{line}: unknown setting {key!r}")
    given: dict[str, tuple[str, str]] = {}
    for opt in options:
        if opt.name in flags:
            given[opt.file_key] = flags[opt.name], f"--{opt.name}"
        elif opt.flag_only:
            continue
        elif opt.env_name(env_prefix) in environ:
            given[opt.file_key] = environ[opt.env_name(env_prefix)], opt.env_name(env_prefix)
        elif opt.file_key in file_values:
            raw, line = file_values[opt.file_key]
            given[opt.file_key] = raw, f"{config_file}:{line}"
    return given


def resolve(options: Sequence[Option], argv: Sequence[str] = (), **sources: Any
            ) -> dict[str, Any]:
    """Every option's value, converted; keys use underscores (``agent_ttl``).

    ``sources`` are :func:`collect`'s keywords. An error names where the text came from
    and the key: ``FLEET_AGENT_TTL: agent_ttl: invalid duration 'abc'``."""
    given = collect(options, argv, **sources)
    resolved: dict[str, Any] = {}
    for opt in options:
        if opt.file_key not in given:
            resolved[opt.file_key] = opt.default
            continue
        raw, origin = given[opt.file_key]
        try:
            resolved[opt.file_key] = opt.convert(raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{origin}: {opt.file_key}: {exc}") from None
    return resolved
