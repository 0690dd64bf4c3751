"""Client for systemd's manager (``org.freedesktop.systemd1``) on the system bus.

Every job-creating call waits for the job's ``JobRemoved`` signal and turns its result into
a return value or a :class:`JobFailed`, so callers never poll unit state to learn whether a
start worked. Unit state changes arrive through ``PropertiesChanged`` subscriptions
(:meth:`Systemd.watch_units`), not polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, Variant

from .bus import Bus
from .errors import InvalidArgument, JobFailed, JobTimeout, SystemdError

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"

JOB_MODES = frozenset(
    {"replace", "fail", "isolate", "ignore-dependencies", "ignore-requirements", "flush",
     "replace-irreversibly"}
)
# systemctl's job verbs and the Manager methods behind them.
JOB_COMMANDS = {
    "start": "StartUnit",
    "stop": "StopUnit",
    "restart": "RestartUnit",
    "reload": "ReloadUnit",
    "try-restart": "TryRestartUnit",
    "reload-or-restart": "ReloadOrRestartUnit",
    "reload-or-try-restart": "ReloadOrTryRestartUnit",
}
DEFAULT_JOB_TIMEOUT = 90.0
# Results of jobs that finished before the caller got around to waiting for them.
_RECENT_JOBS_KEPT = 512


@dataclass(frozen=True)
class UnitStatus:
    """A unit's state as systemd reports it (``systemctl list-units`` columns)."""

    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str
    path: str = ""

    @property
    def is_active(self) -> bool:
        return self.active_state == "active"

    @property
    def is_failed(self) -> bool:
        return self.active_state == "failed"


@dataclass(frozen=True)
class UnitFileChange:
    """One change reported by Enable/Disable/Mask/Link: (type, file, destination)."""

    type: str
    file: str
    destination: str


def unit_path(name: str) -> str:
    """The object path systemd uses for a unit (its name, escaped per sd-bus rules)."""
    out = []
    for position, byte in enumerate(name.encode()):
        char = chr(byte)
        letter = char.isascii() and char.isalpha()
        digit = char.isascii() and char.isdigit() and position > 0
        out.append(char if letter or digit else f"_{byte:02x}")
    return f"{MANAGER_PATH}/unit/{''.join(out)}"


def exec_start(argv: Sequence[str], ignore_failure: bool = False) -> tuple[str, str, Any]:
    """An ``ExecStart`` property for :meth:`Systemd.start_transient_unit`."""
    if not argv:
        raise InvalidArgument("ExecStart needs a command")
    return ("ExecStart", "a(sasb)", [(argv[0], list(argv), ignore_failure)])


class _JobTracker:
    """Matches ``JobRemoved`` signals with the calls waiting for them."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._finished: OrderedDict[str, str] = OrderedDict()

    def on_signal(self, message: Message) -> None:
        if message.member != "JobRemoved" or message.interface != MANAGER:
            return
        _job_id, job_path, _unit, result = message.body
        future = self._waiting.pop(job_path, None)
        if future is not None and not future.done():
            future.set_result(result)
            return
        self._finished[job_path] = result
        while len(self._finished) > _RECENT_JOBS_KEPT:
            self._finished.popitem(last=False)

    def expect(self, job_path: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if job_path in self._finished:
            future.set_result(self._finished.pop(job_path))
        else:
            self._waiting[job_path] = future
        return future

    def forget(self, job_path: str) -> None:
        self._waiting.pop(job_path, None)


class Systemd:
    """systemd's manager: units, jobs, unit files, transient units, state subscriptions."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._jobs = _JobTracker()
        self._subscribed = False

    @classmethod
    async def connect(cls, address: str | None = None) -> Systemd:
        client = cls(await Bus.connect(address))
        await client._subscribe()
        return client

    async def close(self) -> None:
        self.bus.disconnect()

    async def _subscribe(self) -> None:
        """Asks systemd to emit job and unit signals, and routes JobRemoved to waiters."""
        if self._subscribed:
            return
        self.bus.add_signal_handler(self._jobs.on_signal)
        await self.bus.add_match(
            f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
            f"interface='{MANAGER}',member='JobRemoved'"
        )
        await self._manager("Subscribe")
        self._subscribed = True

    async def _manager(
        self, member: str, signature: str = "", body: list[Any] | None = None,
        unit: str | None = None,
    ) -> Message:
        return await self.bus.call(
            SYSTEMD, MANAGER_PATH, MANAGER, member, signature, body, unit=unit
        )

    # -- jobs --------------------------------------------------------------------------

    async def _run_job(
        self, member: str, name: str, mode: str, timeout: float | None, job_type: str,
        signature: str = "ss", body: list[Any] | None = None,
    ) -> str:
        if mode not in JOB_MODES:
            raise InvalidArgument(f"unknown job mode {mode!r}", unit=name)
        reply = await self._manager(member, signature, body or [name, mode], unit=name)
        job_path = reply.body[0]
        future = self._jobs.expect(job_path)
        try:
            result = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            self._jobs.forget(job_path)
            raise JobTimeout(
                f"{job_type} job {job_path} did not finish within {timeout}s", unit=name
            ) from exc
        if result != "done":
            raise JobFailed(name, job_type, result)
        return result

    async def unit_command(
        self, command: str, name: str, mode: str = "replace",
        timeout: float | None = DEFAULT_JOB_TIMEOUT,
    ) -> str:
        """Runs one of systemctl's job verbs (see JOB_COMMANDS) on ``name`` and waits for
        the job; raises :class:`JobFailed` unless its result is ``done``."""
        member = JOB_COMMANDS.get(command)
        if member is None:
            raise InvalidArgument(
                f"unknown unit command {command!r} (one of {', '.join(JOB_COMMANDS)})", unit=name
            )
        return await self._run_job(member, name, mode, timeout, command)

    async def start_unit(
        self, name: str, mode: str = "replace", timeout: float | None = DEFAULT_JOB_TIMEOUT
    ) -> str:
        """Starts ``name`` and waits for the job; raises :class:`JobFailed` unless done."""
        return await self.unit_command("start", name, mode, timeout)

    async def stop_unit(
        self, name: str, mode: str = "replace", timeout: float | None = DEFAULT_JOB_TIMEOUT
    ) -> str:
        return await self.unit_command("stop", name, mode, timeout)

    async def restart_unit(
        self, name: str, mode: str = "replace", timeout: float | None = DEFAULT_JOB_TIMEOUT
    ) -> str:
        return await self.unit_command("restart", name, mode, timeout)

    async def reload_unit(
        self, name: str, mode: str = "replace", timeout: float | None = DEFAULT_JOB_TIMEOUT
    ) -> str:
        return await self.unit_command("reload", name, mode, timeout)

    async def start_transient_unit(
        self,
        name: str,
        properties: Iterable[tuple[str, str, Any]],
        *,
        mode: str = "fail",
        timeout: float | None = DEFAULT_JOB_TIMEOUT,
    ) -> str:
        """Creates and starts a transient unit; ``properties`` are (name, signature, value).

        For a service, include :func:`exec_start`. With ``Type=oneshot`` the start job
        completes when the command has exited, so the returned result (or
        :class:`JobFailed`) is the command's outcome.
        """
        props = [(key, Variant(sig, value)) for key, sig, value in properties]
        return await self._run_job(
            "StartTransientUnit", name, mode, timeout, "start",
            signature="ssa(sv)a(sa(sv))", body=[name, mode, props, []],
        )

    async def kill_unit(self, name: str, signal: int, whom: str = "all") -> None:
        await self._manager("KillUnit", "ssi", [name, whom, signal], unit=name)

    async def reset_failed_unit(self, name: str) -> None:
        await self._manager("ResetFailedUnit", "s", [name], unit=name)

    async def daemon_reload(self) -> None:
        """Reloads unit files; returns once systemd has finished reloading."""
        await self._manager("Reload")

    # -- unit files --------------------------------------------------------------------

    @staticmethod
    def _changes(body: list[Any], index: int) -> list[UnitFileChange]:
        return [UnitFileChange(*change) for change in body[index]]

    async def link_unit_files(
        self, paths: Sequence[str], runtime: bool = False, force: bool = True
    ) -> list[UnitFileChange]:
        reply = await self._manager(
            "LinkUnitFiles", "asbb", [list(paths), runtime, force], unit=",".join(paths)
        )
        return self._changes(reply.body, 0)

    async def enable_unit_files(
        self, names: Sequence[str], runtime: bool = False, force: bool = True
    ) -> list[UnitFileChange]:
        reply = await self._manager(
            "EnableUnitFiles", "asbb", [list(names), runtime, force], unit=",".join(names)
        )
        return self._changes(reply.body, 1)

    async def disable_unit_files(
        self, names: Sequence[str], runtime: bool = False
    ) -> list[UnitFileChange]:
        reply = await self._manager(
            "DisableUnitFiles", "asb", [list(names), runtime], unit=",".join(names)
        )
        return self._changes(reply.body, 0)

    async def mask_unit_files(
        self, names: Sequence[str], runtime: bool = False, force: bool = True
    ) -> list[UnitFileChange]:
        reply = await self._manager(
            "MaskUnitFiles", "asbb", [list(names), runtime, force], unit=",".join(names)
        )
        return self._changes(reply.body, 0)

    async def unmask_unit_files(
        self, names: Sequence[str], runtime: bool = False
    ) -> list[UnitFileChange]:
        reply = await self._manager(
            "UnmaskUnitFiles", "asb", [list(names), runtime], unit=",".join(names)
        )
        return self._changes(reply.body, 0)

    async def unit_file_state(self, name: str) -> str:
        """``enabled``, ``disabled``, ``masked``, ``static``, ... for a unit file."""
        reply = await self._manager("GetUnitFileState", "s", [name], unit=name)
        return reply.body[0]

    # -- unit state --------------------------------------------------------------------

    async def list_units(self, names: Sequence[str] | None = None) -> list[UnitStatus]:
        """Units by name (also ones not loaded: those report ``not-found``/``inactive``),
        or every loaded unit when ``names`` is None."""
        if names is None:
            reply = await self._manager("ListUnits")
        else:
            reply = await self._manager("ListUnitsByNames", "as", [list(names)])
        return [UnitStatus(r[0], r[1], r[2], r[3], r[4], r[6]) for r in reply.body[0]]

    async def unit_status(self, name: str) -> UnitStatus:
        return (await self.list_units([name]))[0]

    async def load_unit(self, name: str) -> str:
        """Loads ``name`` if needed and returns its object path."""
        reply = await self._manager("LoadUnit", "s", [name], unit=name)
        return reply.body[0]

    async def unit_property(self, name: str, prop: str, interface: str = UNIT) -> Any:
        path = await self.load_unit(name)
        return await self.bus.get_property(SYSTEMD, path, interface, prop)

    @contextlib.asynccontextmanager
    async def watch_units(self, names: Sequence[str]) -> AsyncIterator[UnitWatch]:
        """Subscribes to state changes of ``names``; yields a :class:`UnitWatch`.

        The watch is primed with each unit's current state, then receives every change
        systemd signals, in order.
        """
        watch = UnitWatch(self, list(names))
        await watch._open()
        try:
            yield watch
        finally:
            await watch._close()


class UnitWatch:
    """A stream of :class:`UnitStatus` for a fixed set of units, fed by PropertiesChanged."""

    def __init__(self, systemd: Systemd, names: list[str]) -> None:
        self._systemd = systemd
        self._by_path: dict[str, str] = {}
        self._names = names
        self._state: dict[str, UnitStatus] = {}
        self._queue: asyncio.Queue[UnitStatus] = asyncio.Queue()
        self._rules: list[str] = []

    @property
    def current(self) -> dict[str, UnitStatus]:
        """The latest known state of every watched unit."""
        return dict(self._state)

    async def _open(self) -> None:
        bus = self._systemd.bus
        for name in self._names:
            path = unit_path(name)
            self._by_path[path] = name
            rule = (
                f"type='signal',sender='{SYSTEMD}',path='{path}',"
                f"interface='{PROPERTIES}',member='PropertiesChanged'"
            )
            await bus.add_match(rule)
            self._rules.append(rule)
        bus.add_signal_handler(self._on_signal)
        for status in await self._systemd.list_units(self._names):
            self._publish(status)

    async def _close(self) -> None:
        bus = self._systemd.bus
        bus.remove_signal_handler(self._on_signal)
        for rule in self._rules:
            with contextlib.suppress(SystemdError):
                await bus.remove_match(rule)

    def _publish(self, status: UnitStatus) -> None:
        if self._state.get(status.name) != status:
            self._state[status.name] = status
            self._queue.put_nowait(status)

    def _on_signal(self, message: Message) -> None:
        name = self._by_path.get(message.path or "")
        if name is None or message.member != "PropertiesChanged" or message.body[0] != UNIT:
            return
        changed = {key: variant.value for key, variant in message.body[1].items()}
        previous = self._state.get(name) or UnitStatus(name, "", "", "", "")
        self._publish(
            UnitStatus(
                name=name,
                description=changed.get("Description", previous.description),
                load_state=changed.get("LoadState", previous.load_state),
                active_state=changed.get("ActiveState", previous.active_state),
                sub_state=changed.get("SubState", previous.sub_state),
                path=message.path or previous.path,
            )
        )

    async def next(self, timeout: float | None = None) -> UnitStatus:
        """The next state change (or priming state) of any watched unit."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def wait_for(
        self, name: str, predicate, timeout: float
    ) -> UnitStatus:
        """Waits until ``predicate(status)`` holds for unit ``name``; returns that status."""
        status = self._state.get(name)
        if status is not None and predicate(status):
            return status
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{name}: condition not reached within {timeout}s")
            status = await self.next(remaining)
            if status.name == name and predicate(status):
                return status

    def __aiter__(self) -> UnitWatch:
        return self

    async def __anext__(self) -> UnitStatus:
        return await self.next()
