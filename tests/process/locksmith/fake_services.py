"""Test stand-ins on a private bus: logind's Reboot (recorded, never performed) and
update-engine's GetStatus (a fixed answer). Used only by tests/process/locksmith: the
host's real logind must not reboot the test machine.

Each call is appended to ``--record`` as one JSON line; ``--refuse-reboots N`` answers
the first N Reboot calls with logind's inhibitor refusal, as a block-mode inhibitor would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

LOGIND = ("org.freedesktop.login1", "/org/freedesktop/login1",
          "org.freedesktop.login1.Manager")
UPDATE = ("com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager")


async def serve(args: argparse.Namespace) -> None:
    bus = await MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"]).connect()
    record = Path(args.record)
    refusals = args.refuse_reboots

    def note(entry: dict) -> None:
        with record.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    def handler(message: Message) -> bool:
        nonlocal refusals
        if message.message_type != MessageType.METHOD_CALL:
            return False
        key = (message.path, message.interface, message.member)
        if key == (LOGIND[1], LOGIND[2], "Reboot"):
            note({"call": "Reboot", "args": list(message.body)})
            if refusals > 0:
                refusals -= 1
                bus.send(Message.new_error(
                    message, "org.freedesktop.login1.BlockedByInhibitorLock",
                    "Operation inhibited by \"backup\" (PID 1 \"backup\", user root), "
                    "reason is \"writing\"."))
            else:
                bus.send(Message.new_method_return(message))
            return True
        if key == (UPDATE[1], UPDATE[2], "GetStatus"):
            note({"call": "GetStatus"})
            bus.send(Message.new_method_return(message, "xdssx",
                                               [0, 0.0, args.status, "", 0]))
            return True
        return False

    bus.add_message_handler(handler)
    await bus.request_name(LOGIND[0])
    await bus.request_name(UPDATE[0])
    Path(args.ready).write_text("ready")
    await bus.wait_for_disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--status", default="UPDATE_STATUS_IDLE")
    parser.add_argument("--refuse-reboots", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
