"""The agent's SystemdManager on a real machine: a thin layer over the shared D-Bus client.

Unit files are linked and enabled at runtime (under /run), as fleet does. Start and
stop wait for systemd's JobRemoved, so a unit's file is only removed once its stop job
(and ExecStop=) has finished. State changes come from PropertiesChanged signals on
unit objects, not from polling. The journal is read with ``journalctl`` because the
journal has no D-Bus interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence

from dbus_fast import Message
from flotilla.daemons.systemd import NoSuchUnit, Systemd
from flotilla.daemons.systemd.manager import MANAGER_PATH, PROPERTIES, SYSTEMD, UNIT

from .systemd_iface import StatusCallback, UnitStatus

log = logging.getLogger("fleet.systemd")
RESTART_JOBS = ("restart", "try-restart", "reload-or-restart", "reload-or-try-restart")

UNIT_PATH_PREFIX = f"{MANAGER_PATH}/unit/"


def name_from_path(path: str) -> str | None:
    """Undo systemd's object-path escaping (``_2e`` → ``.``) to get the unit name."""
    if not path.startswith(UNIT_PATH_PREFIX):
        return None
    escaped = path[len(UNIT_PATH_PREFIX) :]
    out = bytearray()
    index = 0
    while index < len(escaped):
        char = escaped[index]
        if char == "_" and index + 3 <= len(escaped):
            try:
                out.append(int(escaped[index + 1 : index + 3], 16))
                index += 3
                continue
            except ValueError:
                return None
        out += char.encode()
        index += 1
    return out.decode(errors="replace")


class DbusSystemd:
    def __init__(self, systemd: Systemd) -> None:
        self.systemd = systemd
        self._callbacks: list[StatusCallback] = []
        self._last: dict[str, UnitStatus] = {}
        self._rule = (f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',"
                      f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}/unit'")
        self._subscribed = False

    @classmethod
    async def connect(cls, user: bool = False) -> DbusSystemd:
        if user:
            raise NotImplementedError("systemd_user: the user manager is not supported")
        return cls(await Systemd.connect())

    async def restarting_self(self) -> bool:
        """True while systemd runs a restart job for the unit this process belongs to.

        ``systemctl restart fleetd`` and ``systemctl stop fleetd`` both arrive as SIGTERM;
        only the pending job tells them apart. A restart must leave the local units
        running (the next fleetd adopts them), a stop must purge them.
        """
        try:
            reply = await self.systemd.bus.call(
                SYSTEMD, MANAGER_PATH, f"{SYSTEMD}.Manager", "GetUnitByPID", "u",
                [os.getpid()])
            job = await self.systemd.bus.get_property(SYSTEMD, reply.body[0], UNIT, "Job")
            if not job or job[1] == "/":
                return False
            kind = await self.systemd.bus.get_property(SYSTEMD, job[1], f"{SYSTEMD}.Job",
                                                       "JobType")
        except Exception as error:  # a stop must still purge if systemd cannot answer
            log.warning("could not ask systemd whether fleetd is restarting: %s", error)
            return False
        return kind in RESTART_JOBS

    async def link_unit_files(self, paths: Sequence[str]) -> None:
        await self.systemd.link_unit_files(list(paths), runtime=True, force=True)

    async def enable_unit_files(self, paths: Sequence[str]) -> None:
        await self.systemd.enable_unit_files(list(paths), runtime=True, force=True)

    async def disable_unit_files(self, names: Sequence[str]) -> None:
        await self.systemd.disable_unit_files(list(names), runtime=True)

    async def reload(self) -> None:
        await self.systemd.daemon_reload()

    async def start_unit(self, name: str) -> None:
        await self.systemd.start_unit(name)

    async def stop_unit(self, name: str) -> None:
        with contextlib.suppress(NoSuchUnit):
            await self.systemd.stop_unit(name)

    async def reset_failed_unit(self, name: str) -> None:
        with contextlib.suppress(NoSuchUnit):
            await self.systemd.reset_failed_unit(name)

    async def unit_statuses(self, names: Sequence[str]) -> dict[str, UnitStatus]:
        result = {}
        for status in await self.systemd.list_units(list(names)):
            result[status.name] = UnitStatus(status.load_state, status.active_state,
                                             status.sub_state)
        self._last.update(result)
        return result

    async def subscribe(self, callback: StatusCallback) -> None:
        self._callbacks.append(callback)
        if not self._subscribed:
            await self.systemd.bus.add_match(self._rule)
            self.systemd.bus.add_signal_handler(self._on_signal)
            self._subscribed = True

    def _on_signal(self, message: Message) -> None:
        if message.member != "PropertiesChanged" or not message.body or message.body[0] != UNIT:
            return
        name = name_from_path(message.path or "")
        if name is None:
            return
        changed = {key: variant.value for key, variant in message.body[1].items()}
        if not {"LoadState", "ActiveState", "SubState"} & set(changed):
            return
        previous = self._last.get(name, UnitStatus("", "", ""))
        status = UnitStatus(changed.get("LoadState", previous.load_state),
                            changed.get("ActiveState", previous.active_state),
                            changed.get("SubState", previous.sub_state))
        self._last[name] = status
        for callback in self._callbacks:
            callback(name, status)

    async def status_text(self, name: str) -> str:
        status = (await self.systemd.list_units([name]))[0]
        return (f"● {name} - {status.description}\n"
                f"   Loaded: {status.load_state}\n"
                f"   Active: {status.active_state} ({status.sub_state})\n")

    async def journal(self, name: str, lines: int) -> str:
        process = await asyncio.create_subprocess_exec(
            "journalctl", "--unit", name, "--no-pager", "-n", str(lines), "--output", "short",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        return output.decode(errors="replace")

    async def close(self) -> None:
        if self._subscribed:
            self.systemd.bus.remove_signal_handler(self._on_signal)
            with contextlib.suppress(Exception):
                await self.systemd.bus.remove_match(self._rule)
        await self.systemd.close()
