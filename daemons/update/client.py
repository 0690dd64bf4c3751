"""``update_engine_client``: the command users and scripts already know, over D-Bus.

Flags are gflags booleans as upstream parses them: one or two dashes, ``-flag=true|false``
and ``-noflag``; the first of these that is set wins, in upstream's order:

``-reset_status``
    ResetStatus. 0 on success, with the reminder that the partition table still boots the
    new slot; 1 when refused, with the status that refused it and what to do.
``-status``
    GetStatus printed as update_engine_client prints it (``LAST_CHECKED_TIME=``,
    ``PROGRESS=%f``, ``CURRENT_OP=``, ``NEW_VERSION=``, ``NEW_SIZE=``), then our
    GetDetails lines (``NEXT_CHECK_TIME``, ``NEXT_CHECK_REASON``, ``LAST_ANSWER``,
    ``LAST_ERROR``, ``REBOOT_EXPLANATION``, ``MARKED_GOOD``, then ``UPDATE_ENGINE_<KEY>``
    for any other key; empty ones left out), all
    valid shell so ``. <(update_engine_client -status)`` keeps working. A value that is not
    plain shell-safe text (a server could send any version string) is single-quoted, so
    sourcing the output never runs anything.
``-check_for_update``
    AttemptUpdate and return.
``-update``
    AttemptUpdate, then wait: 0 once the engine says UPDATED_NEED_REBOOT, or is IDLE again
    after the attempt (no update was offered); 1 otherwise, as its help text promises.
    Upstream polls GetStatus every 5 s and prints it each time; so do we, and the
    StatusUpdate signal ends the wait as soon as the outcome is known. Unlike upstream an
    attempt that went through UPDATE_STATUS_REPORTING_ERROR_EVENT back to IDLE counts as a
    failure (1), since nothing was updated.
``-watch_for_updates``
    Print every StatusUpdate until interrupted. The match names the bus name rather than
    its current owner, so signals keep arriving across a restart of update-engine.

Without a flag it does nothing and exits 0, as upstream does. When update-engine is not
on the bus the command fails at once with a message saying so (upstream retried for 40 s
and then aborted), exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from flotilla.daemons.systemd.bus import Bus
from flotilla.daemons.systemd.errors import SystemdError

from .attempter import reboot_explanation
from .codes import Status
from .dbus_service import (
    BUS_NAME,
    DETAIL_LAST_ANSWER,
    DETAIL_LAST_ERROR,
    DETAIL_MARKED_GOOD,
    DETAIL_NEXT_CHECK_REASON,
    DETAIL_NEXT_CHECK_TIME,
    DETAIL_REBOOT_EXPLANATION,
    DETAILS_INTERFACE,
    INTERFACE,
    OBJECT_PATH,
)
from .status import Snapshot

PROG = "update_engine_client"
EXIT_OK = 0
EXIT_FAILED = 1
#: upstream's -update polls GetStatus this often.
UPDATE_POLL_S = 5.0

#: The action flags in upstream's order of precedence, with their help text.
ACTIONS: dict[str, str] = {
    "reset_status": "Sets the status in update_engine to idle.",
    "status": "Print the status to stdout.",
    "check_for_update": "Initiate check for updates.",
    "update": "Forces an update and waits for its completion. "
              "Exit status is 0 if the update succeeded, and 1 otherwise.",
    "watch_for_updates": "Listen for status updates and print them to the screen.",
}
#: glog's flags, accepted (as upstream's binary accepts them) and ignored.
IGNORED_BOOL = frozenset({"logtostderr", "alsologtostderr", "colorlogtostderr"})
IGNORED_VALUE = frozenset({"v", "minloglevel", "stderrthreshold", "vmodule", "log_dir"})
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})

#: GetDetails keys and the variable each becomes; other keys get UPDATE_ENGINE_ + KEY.
#: (The prefix keeps a sourced -status from setting generic names such as VERSION.)
DETAIL_VARIABLES: dict[str, str] = {
    DETAIL_NEXT_CHECK_TIME: "NEXT_CHECK_TIME",
    DETAIL_NEXT_CHECK_REASON: "NEXT_CHECK_REASON",
    DETAIL_LAST_ANSWER: "LAST_ANSWER",
    DETAIL_LAST_ERROR: "LAST_ERROR",
    DETAIL_REBOOT_EXPLANATION: "REBOOT_EXPLANATION",
    DETAIL_MARKED_GOOD: "MARKED_GOOD",
}
_SHELL_SAFE = re.compile(r"[A-Za-z0-9._+:,/@%=-]*")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]*")

RESET_HINT = ("ResetStatus succeeded. The partition table still boots the new slot next; "
              "to stay on the running one, give it the highest priority again "
              "(cgpt prioritize -i <running USR partition number> <disk>).")
RESETTABLE = (Status.IDLE.value, Status.UPDATED_NEED_REBOOT.value)


class UsageError(Exception):
    """A command line gflags would refuse; the message is gflags' wording."""


@dataclasses.dataclass(frozen=True)
class Options:
    """The parsed command line; ``action`` is the flag that runs, None for none."""

    action: str | None
    flags: frozenset[str] = frozenset()
    help: bool = False


# ---------------------------------------------------------------------- pure parts


def _bool_value(name: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f"ERROR: illegal value '{text}' specified for bool flag '{name}'")


def parse_args(argv: Sequence[str]) -> Options:
    """gflags' reading of the command line; positional words are ignored, as upstream."""
    on: set[str] = set()
    want_help = False
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            continue
        name, eq, value = word.lstrip("-").partition("=")
        if name in ("help", "h", "helpfull", "helpshort"):
            want_help = True
            continue
        if name in IGNORED_VALUE:
            if not eq:
                if i >= len(words):
                    raise UsageError(f"ERROR: flag '{word}' is missing its argument")
                i += 1
            continue
        negated = False
        if name not in ACTIONS and name not in IGNORED_BOOL and name.startswith("no") \
                and (name[2:] in ACTIONS or name[2:] in IGNORED_BOOL):
            name, negated = name[2:], True
            if eq:
                raise UsageError(f"ERROR: boolean value ({value}) specified for bool flag "
                                 f"'{name}' via --no{name}")
        if name not in ACTIONS and name not in IGNORED_BOOL:
            raise UsageError(f"ERROR: unknown command line flag '{name}'")
        state = _bool_value(name, value) if eq else not negated
        if name in ACTIONS:
            (on.add if state else on.discard)(name)
    action = next((name for name in ACTIONS if name in on), None)
    return Options(action=action, flags=frozenset(on), help=want_help)


def usage() -> str:
    lines = [f"Usage: {PROG} [-flag ...]  (one or two dashes; -flag=false, -noflag)", ""]
    lines += [f"  -{name}: {text}" for name, text in ACTIONS.items()]
    return "\n".join(lines) + "\n"


def shell_value(text: str) -> str:
    """``text`` as upstream prints it when that is safe to source, else single-quoted."""
    return text if _SHELL_SAFE.fullmatch(text) else shlex.quote(text)


def format_status(snap: Snapshot, details: dict[str, str] | None = None) -> str:
    """``-status`` output: upstream's five lines, then our details as shell assignments.

    When a reboot is pending and the engine gave no explanation, a generic one is added,
    so a machine stuck in UPDATED_NEED_REBOOT always says why and how out.
    """
    out = [f"LAST_CHECKED_TIME={snap.last_checked_time}",
           f"PROGRESS={snap.progress:f}",
           f"CURRENT_OP={shell_value(snap.current_operation)}",
           f"NEW_VERSION={shell_value(snap.new_version)}",
           f"NEW_SIZE={snap.new_size}"]
    extra = dict(details or {})
    if snap.current_operation == Status.UPDATED_NEED_REBOOT.value \
            and not extra.get(DETAIL_REBOOT_EXPLANATION):
        extra[DETAIL_REBOOT_EXPLANATION] = reboot_explanation(snap.new_version, "")
    for key in [*DETAIL_VARIABLES, *sorted(set(extra) - set(DETAIL_VARIABLES))]:
        value = extra.get(key)
        if value is None or value == "" or not _DETAIL_KEY.fullmatch(key):
            continue
        variable = DETAIL_VARIABLES.get(key, "UPDATE_ENGINE_" + key.upper())
        out.append(f"{variable}={shlex.quote(value)}")
    return "\n".join(out) + "\n"


def format_signal(snap: Snapshot) -> str:
    """One StatusUpdate as upstream's watcher words it (progress as C++ streams print it)."""
    return ("Got status update:\n"
            f"  last_checked_time: {snap.last_checked_time}\n"
            f"  progress: {snap.progress:g}\n"
            f"  current_operation: {snap.current_operation}\n"
            f"  new_version: {snap.new_version}\n"
            f"  new_size: {snap.new_size}\n")


def snapshot_from_body(body: Sequence[Any]) -> Snapshot:
    """A GetStatus reply or StatusUpdate body; ValueError when it is not ``(xdssx)``."""
    if len(body) != 5:
        raise ValueError(f"status has {len(body)} values, not 5")
    checked, progress, op, version, size = body
    if not (isinstance(checked, int) and isinstance(progress, float)
            and isinstance(op, str) and isinstance(version, str) and isinstance(size, int)):
        raise ValueError(f"status {list(body)!r} is not (xdssx)")
    return Snapshot(checked, progress, op, version, size)


@dataclasses.dataclass
class UpdateWait:
    """What ``-update`` has seen since its AttemptUpdate; decides when the wait ends."""

    active: bool = False   # the engine left IDLE at some point
    failed: bool = False   # it went through REPORTING_ERROR_EVENT
    polled: bool = False   # a full poll interval passed

    def observe(self, op: str) -> tuple[int, str] | None:
        """(exit code, message) once ``op`` ends the wait, else None."""
        if op == Status.UPDATED_NEED_REBOOT.value:
            return EXIT_OK, "Update succeeded -- reboot needed."
        if op == Status.REPORTING_ERROR_EVENT.value:
            self.failed = True
        if op != Status.IDLE.value:
            self.active = True
            return None
        if self.failed:
            return EXIT_FAILED, "Update failed."
        if self.active or self.polled:
            return EXIT_OK, "No update available"
        return None


# ---------------------------------------------------------------------- bus side


class ServiceError(Exception):
    """A call failed; the message says what to do about it."""


def explain(member: str, err: SystemdError) -> str:
    name = err.dbus_error or ""
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return (f"{BUS_NAME} is not on the system bus: is update-engine.service running? "
                "(systemctl status update-engine)")
    if name == "org.freedesktop.DBus.Error.AccessDenied":
        return (f"{member} refused by the bus policy: only root may call it "
                f"(run with sudo). {err}")
    if name == "org.freedesktop.DBus.Error.NoReply":
        return f"{member}: update-engine gave no answer ({err})"
    return f"{member} failed: {err}"


class Client:
    """The five calls the command makes, over one bus connection."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> Client:
        try:
            return cls(await Bus.connect(address))
        except (OSError, EOFError, ValueError) as err:
            raise ServiceError(f"cannot connect to the system bus: {err}") from err

    async def call(self, interface: str, member: str) -> list[Any]:
        try:
            reply = await self.bus.call(BUS_NAME, OBJECT_PATH, interface, member)
        except SystemdError as err:
            raise ServiceError(explain(member, err)) from err
        return list(reply.body)

    async def require_service(self) -> None:
        """Fail now, with the reason, when nobody owns the name (signals would never come)."""
        try:
            reply = await self.bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "NameHasOwner", "s",
                                        [BUS_NAME])
        except SystemdError as err:
            raise ServiceError(explain("NameHasOwner", err)) from err
        if not reply.body or not reply.body[0]:
            raise ServiceError(explain("watch", SystemdError(
                "no owner", dbus_error="org.freedesktop.DBus.Error.NameHasNoOwner")))

    async def status(self) -> Snapshot:
        try:
            return snapshot_from_body(await self.call(INTERFACE, "GetStatus"))
        except ValueError as err:
            raise ServiceError(f"GetStatus answered something else: {err}") from err

    async def details(self) -> dict[str, str]:
        """GetDetails, or nothing from a service without our extension (update_engine)."""
        try:
            body = await self.bus.call(BUS_NAME, OBJECT_PATH, DETAILS_INTERFACE, "GetDetails")
        except SystemdError as err:
            if err.dbus_error in ("org.freedesktop.DBus.Error.UnknownMethod",
                                  "org.freedesktop.DBus.Error.UnknownInterface",
                                  "org.freedesktop.DBus.Error.UnknownObject"):
                return {}
            raise ServiceError(explain("GetDetails", err)) from err
        value = body.body[0] if body.body else {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    async def watch(self, on_status: Callable[[Snapshot], None],
                    on_owner_change: Callable[[str], None] | None = None) -> None:
        """Deliver every StatusUpdate from whoever owns the name (and owner changes)."""
        from dbus_fast import Message

        def handler(msg: Message) -> None:
            if msg.interface == INTERFACE and msg.member == "StatusUpdate":
                with contextlib.suppress(ValueError):
                    on_status(snapshot_from_body(msg.body))
            elif (msg.member == "NameOwnerChanged" and on_owner_change is not None
                  and msg.body and msg.body[0] == BUS_NAME):
                on_owner_change(str(msg.body[2]))

        self.bus.add_signal_handler(handler)
        try:
            await self.bus.add_match(f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
                                     f"interface='{INTERFACE}',member='StatusUpdate'")
            if on_owner_change is not None:
                await self.bus.add_match(
                    "type='signal',sender='org.freedesktop.DBus',"
                    "interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                    f"arg0='{BUS_NAME}'")
        except SystemdError as err:
            raise ServiceError(explain("AddMatch", err)) from err


def _say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


async def run_reset(client: Client) -> int:
    before = ""
    with contextlib.suppress(ServiceError):  # the call below reports an absent service
        before = (await client.status()).current_operation
    try:
        await client.call(INTERFACE, "ResetStatus")
    except ServiceError as err:
        _say(f"ResetStatus failed. {err}")
        with contextlib.suppress(ServiceError):
            op = (await client.status()).current_operation
            if op not in RESETTABLE:
                _say(f"update-engine is in {op}; a reset is allowed only from "
                     f"{' or '.join(RESETTABLE)}. Let the running attempt finish "
                     f"({PROG} -watch_for_updates shows it) and try again.")
        return EXIT_FAILED
    if before == Status.IDLE.value:
        _say(f"ResetStatus succeeded; update-engine was already {before}, nothing changed.")
    else:
        _say(RESET_HINT)
    return EXIT_OK


async def run_status(client: Client, out: TextIO) -> int:
    snap = await client.status()
    out.write(format_status(snap, await client.details()))
    out.flush()
    return EXIT_OK


async def run_update(client: Client, out: TextIO, *, wait: bool,
                     poll_s: float = UPDATE_POLL_S) -> int:
    seen: asyncio.Queue[str] = asyncio.Queue()
    if wait:  # listen before asking, so no change falls between the call and the match
        await client.watch(lambda snap: seen.put_nowait(snap.current_operation),
                           lambda owner: seen.put_nowait("" if not owner else "\0restart"))
    _say("Initiating update check and install.")
    await client.call(INTERFACE, "AttemptUpdate")
    if not wait:
        return EXIT_OK
    state = UpdateWait()
    # Already UPDATED_NEED_REBOOT (AttemptUpdate then changes nothing, so no signal comes):
    # done now. IDLE here decides nothing yet; the check may not have started.
    outcome = state.observe((await client.status()).current_operation)
    if outcome is not None:
        return _finish(out, await client.status(), outcome)
    _say("Waiting for update to complete.")
    loop = asyncio.get_running_loop()
    next_poll = loop.time() + poll_s
    while True:
        try:
            op: str | None = await asyncio.wait_for(seen.get(),
                                                    max(0.0, next_poll - loop.time()))
        except TimeoutError:
            op = None
        if op == "":
            raise ServiceError(f"{BUS_NAME} left the bus while the update ran")
        printed = False
        if op is None or op == "\0restart":  # poll time, or the service came back
            snap = await client.status()
            out.write(format_status(snap))
            out.flush()
            printed = True
            state.polled = op is None or state.polled
            op = snap.current_operation
            next_poll = loop.time() + poll_s
        outcome = state.observe(op)
        if outcome is not None:
            if printed:
                _say(outcome[1])
                return outcome[0]
            return _finish(out, await client.status(), outcome)


def _finish(out: TextIO, snap: Snapshot, outcome: tuple[int, str]) -> int:
    """Upstream always ends -update with the status it judged; so does this."""
    out.write(format_status(snap))
    out.flush()
    _say(outcome[1])
    return outcome[0]


async def run_watch(client: Client, out: TextIO) -> int:
    def show(snap: Snapshot) -> None:
        out.write(format_signal(snap))
        out.flush()

    await client.watch(show)
    await client.require_service()
    _say("Watching for status updates.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    return EXIT_OK


async def run(options: Options, out: TextIO, address: str | None = None) -> int:
    client = await Client.connect(address)
    try:
        if options.action == "reset_status":
            return await run_reset(client)
        if options.action == "status":
            return await run_status(client, out)
        if options.action in ("check_for_update", "update"):
            return await run_update(client, out, wait=options.action == "update")
        return await run_watch(client, out)
    finally:
        client.bus.disconnect()


def main(argv: Iterable[str] | None = None) -> int:
    try:
        options = parse_args(list(sys.argv[1:] if argv is None else argv))
    except UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    if options.help:
        sys.stdout.write(usage())
        return EXIT_OK
    if options.action is None:
        _say("no action flag given; nothing to do (see -help).")
        return EXIT_OK
    try:
        return asyncio.run(run(options, sys.stdout))
    except ServiceError as err:
        _say(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
