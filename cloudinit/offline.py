"""systemd and hostnamed stand-ins for a root directory that is not the running system.

With ``--root DIR`` there is no systemd to talk to: the hostname goes to ``DIR/etc/hostname``,
``enable`` creates the ``[Install]`` symlinks as ``systemctl --root`` would, and unit
commands are recorded in ``DIR/run/flotilla-cloudinit/offline-units.json`` (what a booted
machine would then do). Recording the would-be unit states is what lets a second offline
run see that nothing changed, and it lets the benchmark separate our own time from systemd
job time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from flotilla.daemons.durable import write_atomic

UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system",
             "lib/systemd/system", "etc/systemd/network", "run/systemd/network",
             "usr/lib/systemd/network")
STATE_FILE = "run/flotilla-cloudinit/offline-units.json"
_STARTED = {"start": "active", "restart": "active", "reload-or-restart": "active"}


class OfflineSystemd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []

    # -- recorded state ------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads((self.root / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, state: dict[str, dict[str, str]]) -> None:
        write_atomic(self.root / STATE_FILE, json.dumps(state, sort_keys=True).encode(),
                     mode=0o644)

    def _find(self, name: str) -> Path | None:
        for directory in UNIT_DIRS:
            path = self.root / directory / name
            if path.is_symlink() or path.exists():
                return path
        template = re.sub(r"@[^.]+\.", "@.", name)
        if template != name:
            return self._find(template)
        return None

    # -- SystemdControl --------------------------------------------------------------
    async def unit_state(self, name: str) -> tuple[str, str, str]:
        path = self._find(name)
        if path is None:
            return "not-found", "inactive", ""
        if path.is_symlink() and os.readlink(path) == "/dev/null":
            return "masked", "inactive", "masked"
        record = self._load().get(name, {})
        return "loaded", record.get("active", "inactive"), record.get("file", "disabled")

    async def daemon_reload(self) -> None:
        self.calls.append("daemon-reload")

    async def enable_unit_files(self, names: list[str], runtime: bool) -> None:
        state = self._load()
        base = self.root / ("run" if runtime else "etc") / "systemd/system"
        for name in names:
            self.calls.append(f"enable {name}")
            path = self._find(name)
            if path is None:
                from .systemd_api import SystemdError

                raise SystemdError(f"unit {name} does not exist")
            for key, target in _install_section(path.read_text(errors="replace")):
                link = base / (f"{target}.{'wants' if key == 'WantedBy' else 'requires'}"
                               if key != "Alias" else "") / (name if key != "Alias" else target)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(f"/{path.relative_to(self.root)}")
            state.setdefault(name, {})["file"] = "enabled-runtime" if runtime else "enabled"
        self._save(state)

    async def unit_command(self, name: str, command: str) -> None:
        self.calls.append(f"{command} {name}")
        state = self._load()
        record = state.setdefault(name, {})
        if command == "stop":
            record["active"] = "inactive"
        elif command in _STARTED or record.get("active") == "active":
            record["active"] = "active"
        self._save(state)

    async def start_transient_service(self, name: str, argv: list[str]) -> None:
        self.calls.append(f"transient {name} {' '.join(argv)}")


def _install_section(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line:
            key, _, value = line.partition("=")
            if key.strip() in ("WantedBy", "RequiredBy", "Alias"):
                out += [(key.strip(), v) for v in value.split()]
    return out


class OfflineHostname:
    def __init__(self, root: Path) -> None:
        self.path = root / "etc/hostname"

    async def static_hostname(self) -> str:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""

    async def set_static_hostname(self, hostname: str) -> None:
        """Refuses what the hostnamed client refuses on a running machine, with its words:
        a metadata hostname skips the cloud-config validator, and an image must not get
        an /etc/hostname that hostnamed would never have written."""
        from flotilla.daemons.systemd.hostnamed import valid_hostname

        if not valid_hostname(hostname):
            from .systemd_api import SystemdError

            raise SystemdError(f"hostname {hostname}: invalid hostname {hostname!r}")
        write_atomic(self.path, f"{hostname}\n".encode(), mode=0o644)
