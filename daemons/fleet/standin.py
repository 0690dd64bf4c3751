"""An in-memory systemd for the benchmark and the process tests.

It keeps the rules the agent relies on (a unit must be linked before it loads, a
daemon-reload makes links visible, start/stop jobs finish before the call returns,
state changes are pushed to subscribers) without running anything. Selected with
``fleetd --systemd=standin``; a real machine always uses the D-Bus client.

When ``state_file`` is set, every change is also written there as JSON (atomically),
so a test can see from outside what the agent asked systemd to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from flotilla.daemons.durable import write_atomic

from .systemd_iface import StatusCallback, UnitStatus


class StandInSystemd:
    def __init__(self, *, job_delay: float = 0.0, state_file: str | None = None) -> None:
        self.job_delay = job_delay
        self.state_file = state_file
        self.linked: dict[str, str] = {}  # name -> path
        self.visible: set[str] = set()  # linked and reloaded
        self.active: set[str] = set()
        self.enabled: set[str] = set()
        self.log: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self._subscribers: list[StatusCallback] = []
        self._restore()

    def _restore(self) -> None:
        """Pick up what a previous process left, as a real systemd outlives fleetd."""
        if not self.state_file or not Path(self.state_file).is_file():
            return
        try:
            data = json.loads(Path(self.state_file).read_text())
        except ValueError:
            return
        self.linked = {name: path for name, path in data.get("paths", {}).items()
                       if Path(path).is_file()}
        self.visible = set(self.linked)
        self.active = set(data.get("active", [])) & self.visible
        self.enabled = set(data.get("enabled", [])) & self.visible
        self.calls = [tuple(call) for call in data.get("calls", [])]

    def _status(self, name: str) -> UnitStatus:
        if name not in self.visible:
            return UnitStatus("not-found", "inactive", "dead")
        if name in self.active:
            return UnitStatus("loaded", "active", "running")
        return UnitStatus("loaded", "inactive", "dead")

    def _changed(self, name: str) -> None:
        status = self._status(name)
        for callback in self._subscribers:
            callback(name, status)
        self._save()

    def _save(self) -> None:
        if not self.state_file:
            return
        data = {
            "linked": sorted(self.linked), "paths": self.linked, "active": sorted(self.active),
            "enabled": sorted(self.enabled), "calls": self.calls[-500:],
        }
        # Whole for the tests that read it; a test's crash needs no durability.
        write_atomic(self.state_file, json.dumps(data), make_parents=False, sync=False)

    def _note(self, name: str, line: str) -> None:
        stamp = time.strftime("%b %d %H:%M:%S")
        self.log.setdefault(name, []).append(f"{stamp} standin systemd[1]: {line}")

    async def link_unit_files(self, paths: Sequence[str]) -> None:
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(path)
            name = os.path.basename(path)
            self.linked[name] = path
            self.calls.append(("link", name))

    async def enable_unit_files(self, paths: Sequence[str]) -> None:
        for path in paths:
            name = os.path.basename(path)
            self.enabled.add(name)
            self.calls.append(("enable", name))

    async def disable_unit_files(self, names: Sequence[str]) -> None:
        for name in names:
            self.linked.pop(name, None)
            self.enabled.discard(name)
            self.calls.append(("disable", name))

    async def reload(self) -> None:
        self.calls.append(("reload", ""))
        before = set(self.visible)
        self.visible = {n for n in self.linked if Path(self.linked[n]).is_file()} | (
            self.active & before)
        for name in before ^ self.visible:
            self._changed(name)

    async def start_unit(self, name: str) -> None:
        if self.job_delay:
            await asyncio.sleep(self.job_delay)
        if name not in self.visible:
            raise LookupError(f"{name}: unit not found")
        self.calls.append(("start", name))
        if name not in self.active:
            self.active.add(name)
            self._note(name, f"Started {name}.")
            self._changed(name)

    async def stop_unit(self, name: str) -> None:
        if self.job_delay:
            await asyncio.sleep(self.job_delay)
        self.calls.append(("stop", name))
        if name in self.active:
            self.active.discard(name)
            self._note(name, f"Stopped {name}.")
            self._changed(name)

    async def reset_failed_unit(self, name: str) -> None:
        self.calls.append(("reset-failed", name))

    async def unit_statuses(self, names: Sequence[str]) -> dict[str, UnitStatus]:
        return {name: self._status(name) for name in names}

    async def subscribe(self, callback: StatusCallback) -> None:
        self._subscribers.append(callback)

    async def status_text(self, name: str) -> str:
        status = self._status(name)
        path = self.linked.get(name, "")
        return (f"● {name}\n   Loaded: {status.load_state} ({path})\n"
                f"   Active: {status.active_state} ({status.sub_state})\n")

    async def journal(self, name: str, lines: int) -> str:
        entries = self.log.get(name, [])
        return "".join(line + "\n" for line in entries[-lines:] if lines > 0)

    async def close(self) -> None:
        self._save()
