"""The calls the agent makes on systemd, and nothing more.

Keeping the agent behind this small Protocol means the agent's logic runs the same
against the D-Bus client on a real machine (``systemd_dbus.py``) and against the
in-memory stand-in used by the benchmark and the process tests (``standin.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UnitStatus:
    load_state: str
    active_state: str
    sub_state: str


StatusCallback = Callable[[str, UnitStatus], None]


class SystemdManager(Protocol):
    async def link_unit_files(self, paths: Sequence[str]) -> None:
        """Link files into the runtime unit directory (runtime=true, force=true)."""

    async def enable_unit_files(self, paths: Sequence[str]) -> None:
        """Enable files with an [Install] section (runtime=true, force=true)."""

    async def disable_unit_files(self, names: Sequence[str]) -> None:
        """Undo link/enable of the runtime unit files."""

    async def reload(self) -> None:
        """daemon-reload, after a batch of links/unlinks."""

    async def start_unit(self, name: str) -> None:
        """Start and wait for the job to finish (raises on a failed job)."""

    async def stop_unit(self, name: str) -> None:
        """Stop and wait for the job to finish, so ExecStop runs before files go."""

    async def reset_failed_unit(self, name: str) -> None: ...

    async def unit_statuses(self, names: Sequence[str]) -> dict[str, UnitStatus]:
        """Load/active/sub state of each named unit."""

    async def subscribe(self, callback: StatusCallback) -> None:
        """Call ``callback(name, status)`` whenever a unit's state changes."""

    async def status_text(self, name: str) -> str:
        """Human-readable status of one unit (what ``systemctl status`` shows)."""

    async def journal(self, name: str, lines: int) -> str:
        """The last ``lines`` journal lines of one unit."""

    async def close(self) -> None: ...
