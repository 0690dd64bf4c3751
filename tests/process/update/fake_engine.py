"""A stand-in update engine served by the real D-Bus service, steered from stdin.

The real engine (daemons/update/engine.py) checks Omaha servers and writes disks; the
D-Bus tests only need its statuses to change on command. This process serves
:class:`UpdateBusService` on ``--bus`` with a :class:`FakeEngine` whose statuses go
through the real :class:`StatusMachine` (so upstream's transitions and the
ResetNotAllowed rule hold), and reads one JSON command per stdin line:

    {"attempt": "none" | "noupdate" | "update" | "fail"}   what AttemptUpdate will do
    {"goto": ["UPDATE_STATUS_...", ...]}                    these moves, now
    {"offered": ["1.2.3", 4096]}   {"checked": 1700000000}  {"progress": [512, 4096]}
    {"details": {"key": "value"}}

Every call and every command is appended to ``--log`` as a JSON line ({"call": name} or
{"ack": n}), which the tests read to know what happened and when a command took effect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flotilla.daemons.update.codes import Status
from flotilla.daemons.update.dbus_service import UpdateBusService
from flotilla.daemons.update.status import Snapshot, StatusMachine

NEW_VERSION, NEW_SIZE, CHECKED_AT = "3815.2.0", 314_572_800, 1_700_000_123

#: The moves each AttemptUpdate behaviour makes, with what is set on the way.
SCRIPTS: dict[str, list[Status]] = {
    "none": [],
    "noupdate": [Status.CHECKING_FOR_UPDATE, Status.IDLE],
    "update": [Status.CHECKING_FOR_UPDATE, Status.UPDATE_AVAILABLE, Status.DOWNLOADING,
               Status.FINALIZING, Status.UPDATED_NEED_REBOOT],
    "fail": [Status.CHECKING_FOR_UPDATE, Status.UPDATE_AVAILABLE, Status.DOWNLOADING,
             Status.REPORTING_ERROR_EVENT, Status.IDLE],
}


class FakeEngine:
    """The :class:`~flotilla.daemons.update.dbus_service.Engine` protocol, scripted."""

    def __init__(self, log: Path) -> None:
        self.machine = StatusMachine(marker_present=False)
        self.log = log
        self.listeners: list[Callable[[Snapshot], None]] = []
        self.behaviour = "none"
        self.extra: dict[str, str] = {}
        self.clock = 0.0

    def record(self, entry: dict[str, Any]) -> None:
        with self.log.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    def notify(self) -> None:
        for listener in self.listeners:
            listener(self.machine.snapshot())

    def move(self, status: Status) -> None:
        self.clock += 1.0
        if status is Status.UPDATE_AVAILABLE:
            self.machine.checked(CHECKED_AT)
            self.machine.offered(NEW_VERSION, NEW_SIZE)
        if status is Status.IDLE and self.machine.status is Status.CHECKING_FOR_UPDATE:
            self.machine.checked(CHECKED_AT)
        self.machine.move(status, self.clock)
        self.notify()
        if status is Status.DOWNLOADING:
            for part in (1, 2):
                self.clock += 1.0
                if self.machine.downloaded(NEW_SIZE * part // 2, NEW_SIZE,
                                           self.clock).broadcast:
                    self.notify()

    # ---- the protocol

    def snapshot(self) -> Snapshot:
        self.record({"call": "snapshot"})
        return self.machine.snapshot()

    def attempt_update(self) -> None:
        self.record({"call": "attempt_update"})
        if self.machine.status is not Status.IDLE:
            return
        loop = asyncio.get_running_loop()
        for i, status in enumerate(SCRIPTS[self.behaviour]):
            loop.call_later(0.05 * (i + 1), self.move, status)

    def reset_status(self) -> None:
        self.record({"call": "reset_status"})
        effects = self.machine.reset(self.clock)
        if effects.broadcast is not None:
            self.notify()

    def details(self) -> dict[str, str]:
        self.record({"call": "details"})
        return dict(self.extra)

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        self.listeners.append(listener)

    # ---- steering

    def command(self, line: str, number: int) -> None:
        cmd = json.loads(line)
        if "attempt" in cmd:
            self.behaviour = cmd["attempt"]
        if "checked" in cmd:
            self.machine.checked(int(cmd["checked"]))
        if "offered" in cmd:
            self.machine.offered(str(cmd["offered"][0]), int(cmd["offered"][1]))
        if "details" in cmd:
            self.extra = {str(k): str(v) for k, v in cmd["details"].items()}
        for name in cmd.get("goto", []):
            self.move(Status(name))
        if "progress" in cmd:
            self.clock += 20.0  # past the 10 s throttle, so it is announced
            if self.machine.downloaded(*cmd["progress"], self.clock).broadcast:
                self.notify()
        self.record({"ack": number})


async def serve(address: str, log: Path) -> None:
    engine = FakeEngine(log)
    service = UpdateBusService(engine, address)
    service.start()
    await service.owns_name.wait()
    engine.notify()  # the startup broadcast, sent as daemons/update/main.py sends it
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    count = 0

    def readable() -> None:
        nonlocal count
        line = sys.stdin.readline()
        if not line:
            done.set()
            return
        count += 1
        try:
            engine.command(line, count)
        except Exception as err:  # a bad command is the test's bug: say so in the log
            engine.record({"ack": count, "error": f"{type(err).__name__}: {err}"})

    loop.add_reader(sys.stdin.fileno(), readable)
    await done.wait()
    await service.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bus", required=True)
    parser.add_argument("--log", required=True, type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.bus, args.log))


if __name__ == "__main__":
    main()
