"""Daemon settings from flags, environment and a config file, with one precedence rule.

**A flag beats an environment variable, which beats the config file, which beats the
default.** Every daemon declares its options once as :class:`Option` rows; the same row
names the flag (accepted with one or two dashes, as etcd and fleet do), the environment
variable and the config-file key. Values are converted and checked here, and an error
names the option and where the bad value came from, so ``FLEET_AGENT_TTL=abc`` is
reported as exactly that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting was malformed; the message names the option and its source."""


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Option:
    """One setting. ``name`` uses dashes (``agent-ttl``); env and file keys derive from it."""

    name: str
    default: Any = None
    convert: Callable[[str], Any] = str
    help: str = ""
    is_flag: bool = False  # a boolean flag given without a value

    def env_name(self, prefix: str) -> str:
        return prefix + self.name.upper().replace("-", "_")

    @property
    def file_key(self) -> str:
        return self.name.replace("-", "_")


def _parse_config_file(path: Path) -> dict[str, tuple[str, int]]:
    """``key = value`` lines (fleet.conf style); returns key -> (value, line number)."""
    values: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            continue  # section headers carry no meaning for global keys
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected 'key = value', got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip().replace("-", "_")] = (value, number)
    return values


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


def resolve(
    options: Sequence[Option],
    argv: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = "",
    config_file: Path | None = None,
) -> dict[str, Any]:
    """Resolves every option; keys of the result use underscores (``agent_ttl``)."""
    environ = os.environ if environ is None else environ
    by_name = {opt.name: opt for opt in options}
    flags, rest = _parse_flags(argv, by_name)
    if rest:
        raise SettingsError(f"unexpected argument {rest[0]!r}")
    file_values = _parse_config_file(config_file) if config_file and config_file.exists() else {}
    resolved: dict[str, Any] = {}
    for opt in options:
        if opt.name in flags:
            raw, source = flags[opt.name], f"flag --{opt.name}"
        elif opt.env_name(env_prefix) in environ:
            raw, source = environ[opt.env_name(env_prefix)], opt.env_name(env_prefix)
        elif opt.file_key in file_values:
            raw, line = file_values[opt.file_key]
            source = f"{config_file}:{line} {opt.file_key}"
        else:
            resolved[opt.file_key] = opt.default
            continue
        try:
            resolved[opt.file_key] = opt.convert(raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{source}: invalid value {raw!r}: {exc}") from None
    return resolved
