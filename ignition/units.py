"""systemd units, drop-ins, presets and masks in the target root.

Units are written to /etc/systemd/system, drop-ins to ``<unit>.d/``. Enabling goes through
a preset file (/etc/systemd/system-preset/20-ignition.preset) rather than symlinks, so the
target's own systemd decides on first boot what ``enable`` means for that unit, exactly
as Ignition arranges it. Masking is a symlink to /dev/null.
"""

from __future__ import annotations

import os
from typing import Any

from flotilla.daemons.durable import write_atomic
from flotilla.ignition import rootpath
from flotilla.ignition.filesystem_entries import make_leading_dirs

UNIT_DIR = "/etc/systemd/system"
PRESET_PATH = "/etc/systemd/system-preset/20-ignition.preset"


def preset_lines(units: list[dict[str, Any]]) -> list[str]:
    """Preset lines for every unit with ``enabled`` set, in config order (as 2.14)."""
    lines = []
    for unit in units:
        enabled = unit.get("enabled")
        if enabled is None:
            continue
        verb = "enable" if enabled else "disable"
        name = unit["name"]
        if "@" in name and not name.split("@", 1)[1].split(".", 1)[0]:
            lines.append(f"{verb} {name} ")
        elif "@" in name:
            template_prefix, rest = name.split("@", 1)
            instance, _, suffix = rest.rpartition(".")
            lines.append(f"{verb} {template_prefix}@.{suffix} {instance}")
        else:
            lines.append(f"{verb} {name}")
    return lines


def _write(root: str, path: str, data: str) -> None:
    make_leading_dirs(root, path)
    host = rootpath.resolve(root, path)
    # The rename replaces a link at ``host`` rather than writing through it; the files
    # stage ends with one sync of everything it wrote.
    write_atomic(host, data, mode=0o644, root=root, sync=False, make_parents=False)


def apply(root: str, systemd: dict[str, Any]) -> None:
    units = systemd.get("units", [])
    for unit in units:
        name = unit["name"]
        for dropin in unit.get("dropins", []):
            if dropin.get("contents") is not None:
                _write(root, f"{UNIT_DIR}/{name}.d/{dropin['name']}", dropin["contents"])
        if unit.get("contents") is not None:
            _write(root, f"{UNIT_DIR}/{name}", unit["contents"])
        if unit.get("mask"):
            path = f"{UNIT_DIR}/{name}"
            make_leading_dirs(root, path)
            host = rootpath.resolve(root, path)
            if os.path.lexists(host):
                os.unlink(host)
            os.symlink("/dev/null", host)
        elif unit.get("mask") is False:
            host = rootpath.resolve(root, f"{UNIT_DIR}/{name}")
            if os.path.islink(host) and os.readlink(host) == "/dev/null":
                os.unlink(host)
    lines = preset_lines(units)
    if lines:
        _write(root, PRESET_PATH, "".join(f"{line}\n" for line in lines))
