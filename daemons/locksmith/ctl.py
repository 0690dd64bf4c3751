"""``locksmithctl``: locksmith 0.6's command, same words on the same streams, same exits.

Subcommands: ``status``, ``lock [ID]``, ``unlock [ID]``, ``set-max N``, ``reboot``,
``send-need-reboot``, ``help``. Exit 0 on success, 1 on any error (message on stderr, in
upstream's words: ``Error locking: semaphore is at 0``), 2 for a flag error or an unknown
subcommand (on stdout, as upstream prints it).

Where we differ, on purpose: ``lock`` and ``reboot`` succeed when this machine already
holds a slot (upstream refused with "holder exists", locksmith#58); ``unlock ID`` of a machine that
recorded a renewal warns on stderr how long ago it renewed (it may still be rebooting,
and its slot is free from now on); ``status`` and ``unlock ID`` warn on stderr about a
holder whose machine has left fleet's machine list (stdout stays upstream's); a CA file alone is
enough for TLS; ``status`` and ``set-max`` exit 1 when the store cannot be read (upstream
printed the error and crashed); ``send-need-reboot`` returns once the signal is written
(upstream slept a second).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..kvclient import KVClient, KVError
from ..systemd import Bus, Logind, SystemdError
from . import VERSION
from .config import (
    FLAGS,
    HelpRequested,
    UsageError,
    env_fallback,
    parse_flags,
    store_settings,
)
from .decide import NEED_REBOOT
from .semaphore import FLEET_MACHINES, LockError
from .store import Contended, SemaphoreStore

PROG = "locksmithctl"
UPDATE_PATH = "/com/coreos/update1"
UPDATE_INTERFACE = "com.coreos.update1.Manager"

COMMANDS = {
    "help": "Show a list of commands or help for one command",
    "lock": "Lock this machine or a given machine-id for reboot.",
    "reboot": "Reboot honoring reboot locks.",
    "send-need-reboot": "send a 'need reboot' signal over dbus.",
    "set-max": "Set the maximum number of lock holders",
    "status": "Get the status of the cluster wide reboot lock.",
    "unlock": "Unlock this machine or a given machine-id for reboot.",
}


def usage() -> str:
    rows = "\n".join(f"\t{name:<18}{text}" for name, text in COMMANDS.items())
    flags = "\n".join(f"\t-{name}" for name in sorted(FLAGS))
    return (f"NAME:\n\t{PROG} - Manage the cluster wide reboot lock.\n\n"
            f"USAGE:\n\t{PROG} [global options] <command> [command options] [arguments...]\n\n"
            f"COMMANDS:\n{rows}\n\nGLOBAL OPTIONS:\n{flags}\n")


def machine_id(root: str = "/") -> str:
    try:
        return Path(root, "etc/machine-id").read_text().strip()
    except OSError:
        return ""


def departed_warning(holder: str) -> str:
    """What status and unlock say on stderr about a holder fleet no longer lists."""
    return (f"Warning: {holder} holds a reboot slot but has left fleet's machine list "
            f"({FLEET_MACHINES}/{holder}/object is gone); it may be dead. "
            f"'{PROG} unlock {holder}' frees its slot.")


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class Ctl:
    def __init__(self, flags_values: dict[str, str], endpoints: list[str],
                 out: TextIO, err: TextIO) -> None:
        self.flags = flags_values
        self.endpoints = endpoints
        self.out = out
        self.err = err

    def fail(self, text: str) -> int:
        print(text, file=self.err)
        return 1

    async def store(self) -> tuple[KVClient, SemaphoreStore]:
        from .config import Flags
        settings = store_settings(Flags(dict(self.flags), list(self.endpoints)))
        client = KVClient(list(settings.endpoints), cafile=settings.cafile,
                          certfile=settings.certfile, keyfile=settings.keyfile,
                          username=settings.username, password=settings.password)
        semaphore = SemaphoreStore(client, settings.group)
        try:
            await semaphore.init()
        except BaseException:
            await client.close()
            raise
        return client, semaphore

    async def status(self, args: Sequence[str]) -> int:
        try:
            client, store = await self.store()
        except (KVError, OSError, UsageError) as error:
            return self.fail(f"Error initializing etcd client: {error}")
        async with client:
            try:
                value, _ = await store.get()
            except (KVError, LockError) as error:
                return self.fail(f"Error setting value: {error}")
            departed = await self._departed(store, value.holder_list)
        lines = [f"Available: {value.semaphore}", f"Max: {value.max}"]
        if value.holder_list:
            lines += ["", "MACHINE ID", *value.holder_list]
        print("\n".join(lines), file=self.out)
        for holder in departed:
            print(departed_warning(holder), file=self.err)
        return 0

    @staticmethod
    async def _departed(store: SemaphoreStore, holders: Sequence[str]) -> list[str]:
        """Holders gone from fleet's machine list (none when fleet is not in use here)."""
        try:
            fleet = await store.fleet_machines()
        except KVError:
            return []
        return [h for h in holders if fleet and h not in fleet]

    def _target(self, args: Sequence[str]) -> str:
        return args[0] if args else machine_id()

    async def lock(self, args: Sequence[str], *, unlock: bool = False) -> int:
        try:
            client, store = await self.store()
        except (KVError, OSError, UsageError) as error:
            return self.fail(f"Error initializing etcd client: {error}")
        async with client:
            holder = self._target(args)
            if not holder:
                return self.fail("Cannot read machine-id")
            try:
                if unlock:
                    renewed = await self._renewed(store, holder) if args else None
                    departed = await self._departed(store, [holder]) if args else []
                    await store.unlock(holder)
                    for gone in departed:
                        print(departed_warning(gone), file=self.err)
                    if renewed is not None:
                        print(f"Warning: {holder} renewed its reboot slot "
                              f"{max(time.time() - renewed, 0):.0f}s ago and may still be "
                              "rebooting; its slot is free now.", file=self.err)
                else:
                    await store.lock(holder)
            except (KVError, LockError, Contended) as error:
                return self.fail(f"Error {'unlocking' if unlock else 'locking'}: {error}")
        return 0

    @staticmethod
    async def _renewed(store: SemaphoreStore, holder: str) -> float | None:
        """When another machine last renewed its slot (None: never, or unknown)."""
        if holder == machine_id():
            return None
        try:
            records = await store.renewals()
        except KVError:
            return None
        times = [r.renewed for r in records if r.holder == holder]
        return max(times) if times else None

    async def set_max(self, args: Sequence[str]) -> int:
        if len(args) != 1:
            return self.fail("New maximum value must be set.")
        try:
            client, store = await self.store()
        except (KVError, OSError, UsageError) as error:
            return self.fail(f"Error initializing etcd client: {error}")
        async with client:
            try:
                new_max = int(args[0], 10)
            except ValueError:
                return self.fail(f"Invalid maximum value: {args[0]}")
            try:
                old, value = await store.set_max(new_max)
            except (KVError, LockError, Contended) as error:
                return self.fail(f"Error setting value: {error}")
        print(f"Old-Max: {old}\nMax: {value.max}", file=self.out)
        return 0

    async def send_need_reboot(self, args: Sequence[str]) -> int:
        try:
            bus = await Bus.connect()
        except (OSError, EOFError, ValueError, SystemdError) as error:
            return self.fail(f"error connecting to system dbus: {error}")
        try:
            await bus.emit(UPDATE_PATH, UPDATE_INTERFACE, "StatusUpdate", "xdssx",
                           [0, 0.0, NEED_REBOOT, "", 0])
        except (SystemdError, OSError) as error:
            return self.fail(f"error emitting signal: {error}")
        finally:
            bus.disconnect()
        return 0

    async def reboot(self, args: Sequence[str]) -> int:
        if os.geteuid() != 0:
            return self.fail("Must be root to initiate reboot.")
        try:
            client, store = await self.store()
        except (KVError, OSError, UsageError) as error:
            return self.fail(f"Error initializing etcd client: {error}")
        async with client:
            try:
                logind = await Logind.connect()
            except (OSError, EOFError, ValueError, SystemdError) as error:
                return self.fail(f"Error initializing login connection: {error}")
            try:
                holder = machine_id()
                if not holder:
                    return self.fail("Cannot read machine-id")
                try:
                    await store.lock(holder)
                except (KVError, LockError, Contended) as error:
                    return self.fail(f"Error locking: {error}")
                try:
                    await logind.reboot(False)
                except SystemdError as error:
                    return self.fail(f"Error rebooting: {error}")
            finally:
                await logind.close()
        return 0


async def _run(command: str, args: list[str], ctl: Ctl) -> int:
    if command == "status":
        return await ctl.status(args)
    if command == "lock":
        return await ctl.lock(args)
    if command == "unlock":
        return await ctl.lock(args, unlock=True)
    if command == "set-max":
        return await ctl.set_max(args)
    if command == "send-need-reboot":
        return await ctl.send_need_reboot(args)
    return await ctl.reboot(args)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        flags = parse_flags(argv, FLAGS)
    except HelpRequested:
        print(usage(), file=out, end="")
        return 0
    except UsageError as error:
        print(error, file=err)
        print(usage(), file=err, end="")
        return 2
    if flags.values.get("version") == "true":
        print(f"{PROG} version {VERSION}", file=out)
        return 0
    env_fallback(flags, FLAGS, os.environ, "LOCKSMITHCTL")
    args = flags.args or ["help"]
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"{PROG}: unknown subcommand: {_go_quote(command)}", file=out)
        print(f"Run '{PROG} help' for usage.", file=out)
        return 2
    for arg in rest:
        if arg in ("-", "--") or not arg.startswith("-"):
            break
        name = arg.lstrip("-").partition("=")[0]
        # Subcommands take no flags of their own; Go's flag package says so this way.
        print("flag: help requested" if name in ("h", "help")
              else f"flag provided but not defined: -{name}", file=out)
        return 2
    if command == "help":
        print(usage(), file=out, end="")
        return 0
    ctl = Ctl(flags.values, flags.endpoints, out, err)
    return asyncio.run(_run(command, rest, ctl))


if __name__ == "__main__":
    sys.exit(main())
