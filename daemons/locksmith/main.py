"""``locksmithd``: waits for update-engine to need a reboot, then reboots the way it is told.

The shell around :func:`.decide.next_step`. It listens for ``StatusUpdate`` from
``com.coreos.update1.Manager`` (from any sender, as upstream: ``locksmithctl
send-need-reboot`` sends it from its own connection) and asks ``GetStatus`` once at start.
When the answer is ``UPDATE_STATUS_UPDATED_NEED_REBOOT`` it runs the decision loop: wait
for the window, take a slot (``etcd-lock``), broadcast the wall message, and ask logind to
reboot. A refused reboot (an inhibitor lock in block mode) is retried with back-off, and
the window is checked again each time.

At start, with ``etcd-lock``, it gives back a slot it still holds from before the reboot,
retrying with back-off (5 s doubling to 5 minutes) until the store answers; a reboot need
that arrives meanwhile simply keeps the slot (locking is idempotent).

If ``LOCKSMITHD_RECLAIM_AFTER`` (or ``-reclaim-after``) is set, a full semaphore is
checked for holders that have not renewed their record for that long, and those slots
are taken back (logged as a warning). Without it nothing is ever reclaimed.
``LOCKSMITHD_RECLAIM_DEPARTED`` (``-reclaim-departed``, a Go duration, ``0s`` allowed)
likewise takes back the slots of holders whose machine is gone from fleet's machine list
(``/_coreos.com/fleet/machines/<id>/object`` absent) and that have not renewed for that
long; a rebooting holder is briefly gone from fleet too, so the grace should outlast a
reboot.

Drain hooks (``LOCKSMITHD_DRAIN_UNITS``, ``LOCKSMITHD_DRAIN_TIMEOUT``, see
:mod:`.drain`) are started through systemd once the slot is held, inside the window, just
before the reboot; if one fails there is no reboot: the slot is given back, the reason
logged, and the daemon tries again after its back-off. While the drain runs the holder
renews its record every 10 s, so ``LOCKSMITHD_RECLAIM_AFTER`` longer than that never takes
the slot of a machine that is still draining.

Unlike upstream, an absent update-engine at start is logged, not fatal: the signal match
does not need it, and its first StatusUpdate is still heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from .. import durable, journal, service
from ..kvclient import KVClient, KVError
from ..systemd import Bus, Logind, Systemd, SystemdError
from ..update.client import snapshot_from_body
from ..update.config import ConfigError
from . import VERSION, wall
from .config import (
    DAEMON_FLAGS,
    FLAGS,
    UPDATE_CONF,
    DaemonSettings,
    HelpRequested,
    UsageError,
    daemon_settings,
    flag_usage,
    parse_flags,
)
from .ctl import UPDATE_INTERFACE, UPDATE_PATH, machine_id
from .decide import NEED_REBOOT, Kind, Strategy, effective, next_backoff, next_step
from .drain import UnitResult, run_drain, verdict
from .semaphore import LockError, SemaphoreFull
from .store import Contended, SemaphoreStore

log = logging.getLogger("locksmithd")
PROG = "locksmithd"
STORE_UNITS = ("etcd.service", "etcd2.service", "kvd.service")
LOGINS_REBOOT_DELAY = 300.0
#: how often a holder renews its record while draining; LOCKSMITHD_RECLAIM_AFTER on the
#: other machines should be longer
RENEW_INTERVAL = 10.0
#: the shortest wait between two lock attempts, even when a slot shows free at once
MIN_RETRY_S = 0.5
STATUS_MATCH = (f"type='signal',interface='{UPDATE_INTERFACE}',member='StatusUpdate'")


def read_update_conf(root: str) -> list[tuple[str, str]]:
    files = []
    for name in UPDATE_CONF:
        path = Path(root, name.lstrip("/"))
        with contextlib.suppress(FileNotFoundError):
            files.append((str(path), path.read_text()))
    return files


COORDINATOR_CONF = "run/update-engine/coordinator.conf"


def write_coordinator_state(root: str, strategy: str, state: str) -> None:
    """Tells update-engine and users who coordinates reboots and what it is doing, in
    upstream's file (``NAME=``, ``STRATEGY=``, ``STATE=`` starting, running,
    reboot-planned or rebooting). A failure is logged: it must not stop a reboot."""
    text = f"NAME={PROG}\nSTRATEGY={strategy}\nSTATE={state}\n"
    try:
        durable.write_atomic(Path(root, COORDINATOR_CONF), text, sync=False)
    except OSError as err:
        log.error("could not update the coordinator state file: %s", err)


class Daemon:
    def __init__(self, settings: DaemonSettings, supervisor: service.Service) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.need_reboot = asyncio.Event()
        self.store: SemaphoreStore | None = None
        self.client: KVClient | None = None
        self.holder = ""
        self.holding = False
        self.reboot_requested = False
        self.strategy = str(settings.strategy)
        self.drained = False

    async def pause(self, seconds: float) -> bool:
        """Sleeps, or returns True early when the daemon is told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.supervisor.stopping.wait(), max(seconds, 0.0))
        return self.supervisor.stopping.is_set()

    def on_signal(self, message) -> None:
        if message.interface != UPDATE_INTERFACE or message.member != "StatusUpdate":
            return
        try:
            snap = snapshot_from_body(message.body)
        except ValueError as err:
            log.debug("ignoring a malformed StatusUpdate: %s", err)
            return
        if snap.current_operation == NEED_REBOOT and not self.need_reboot.is_set():
            log.info("update-engine says %s", NEED_REBOOT)
            self.need_reboot.set()

    async def release_held(self) -> None:
        """Gives back a slot held from before the reboot, until the store answers."""
        assert self.store is not None
        interval = 0.0
        while not self.supervisor.stopping.is_set():
            try:
                if await self.store.unlock_if_held(self.holder):
                    log.info("Unlocked existing lock for this machine")
                else:
                    await self.store.forget(self.holder)
                return
            except (KVError, LockError, Contended, OSError) as err:
                interval = next_backoff(interval)
                log.error("Unlocking old locks failed: %s. Retrying in %.0fs.", err, interval)
            if await self.pause(interval):
                return

    async def try_lock(self) -> bool:
        assert self.store is not None
        try:
            try:
                await self.store.lock(self.holder)
            except SemaphoreFull:
                if not await self.reclaim():
                    raise
                await self.store.lock(self.holder)
            await self.store.renew(self.holder, time.time())
        except (KVError, LockError, Contended, OSError) as err:
            log.warning("Failed to acquire lock: %s.", err)
            return False
        log.info("took a reboot slot for %s", self.holder)
        return True

    async def reclaim(self) -> bool:
        """Takes back slots as configured (stale, or departed from fleet); True if any."""
        assert self.store is not None
        taken: list[str] = []
        if self.settings.reclaim_after is not None:
            taken += await self.store.reclaim_stale(time.time(), self.settings.reclaim_after)
        if self.settings.reclaim_departed is not None:
            taken += await self.store.reclaim_departed(time.time(),
                                                       self.settings.reclaim_departed)
        return bool(taken)

    async def drain(self) -> bool:
        """Starts the drain units; True when all succeeded. On failure the slot is given
        back (another machine may reboot meanwhile) and the reason is logged."""
        units = self.settings.drain_units
        self.supervisor.status(f"draining: {' '.join(units)}")
        log.info("starting drain units %s (timeout %.0fs)", ", ".join(units),
                 self.settings.drain_timeout)
        renewing = asyncio.create_task(self.keep_renewing()) if self.holding else None
        try:
            results = await self._start_drain_units(units, self.settings.drain_timeout)
        finally:
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
        outcome = verdict(units, results)
        if outcome.ok:
            log.info("%s", outcome.reason)
            return True
        log.error("not rebooting: %s", outcome.reason)
        if self.holding and self.store is not None:
            try:
                await self.store.unlock_if_held(self.holder)
                self.holding = False
                log.info("gave the reboot slot back after the failed drain")
            except (KVError, LockError, Contended, OSError) as err:
                log.warning("could not give the reboot slot back yet: %s", err)
        return False

    @staticmethod
    async def _start_drain_units(units: Sequence[str], timeout: float) -> list[UnitResult]:
        try:
            # its own connection: the client subscribes to systemd's job signals there
            systemd = await Systemd.connect()
        except (SystemdError, OSError, EOFError, ValueError) as err:
            log.error("cannot reach systemd to start the drain units: %s", err)
            return []
        try:
            return await run_drain(systemd, units, timeout)
        finally:
            await systemd.close()

    async def wait_for_slot(self, seconds: float) -> None:
        """The back-off after a lost lock attempt, ended early by a free slot (or a stop).
        A store that cannot be watched leaves the plain back-off."""
        if self.store is None:
            await self.pause(seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        watcher = asyncio.create_task(self.store.wait_for_free(seconds))
        stopper = asyncio.create_task(self.supervisor.stopping.wait())
        try:
            await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
        if not watcher.cancelled() and watcher.exception() is not None:
            log.warning("cannot watch the semaphore (%r): waiting out the back-off",
                      watcher.exception())
            await self.pause(deadline - loop.time())
            return
        # A free slot ends the wait early, but never at once: a lock attempt that keeps
        # failing for another reason while a slot shows free must not spin.
        floor = min(MIN_RETRY_S, seconds) - (seconds - (deadline - loop.time()))
        if floor > 0:
            await self.pause(floor)

    async def keep_renewing(self) -> None:
        """Renews the held slot every RENEW_INTERVAL while a drain runs (drains may take
        minutes), so machines reclaiming stale slots see a live holder as alive."""
        assert self.store is not None
        while not await self.pause(RENEW_INTERVAL):
            try:
                await self.store.renew(self.holder, time.time())
            except (KVError, OSError) as err:
                log.warning("could not renew the reboot slot: %s", err)

    async def release(self) -> None:
        assert self.store is not None
        try:
            await self.store.unlock_if_held(self.holder)
            self.holding = False
            log.info("gave the reboot slot back: the reboot window closed")
        except (KVError, LockError, Contended, OSError) as err:
            log.warning("could not give the reboot slot back yet: %s", err)

    async def reboot(self, logind: Logind) -> bool:
        if self.holding and self.store is not None:
            with contextlib.suppress(KVError, OSError):
                await self.store.renew(self.holder, time.time())
        when = datetime.now().astimezone().strftime("%a %Y-%m-%d %H:%M:%S %Z")
        terminals = wall.broadcast(wall.REBOOT_MESSAGE, when, root=self.settings.root)
        log.info("broadcast %r to %d terminal(s)", wall.REBOOT_MESSAGE, terminals)
        if terminals and await self.pause(LOGINS_REBOOT_DELAY):
            return True
        self.supervisor.status("rebooting")
        write_coordinator_state(self.settings.root, self.strategy, "rebooting")
        try:
            await logind.reboot(False)
        except SystemdError as err:
            log.warning("logind refused the reboot: %s", err)
            return False
        self.reboot_requested = True
        log.info("Reboot sent. Going to sleep.")
        return True

    async def run(self, bus: Bus, strategy: Strategy) -> int:
        logind = Logind(bus)
        backoff = 0.0
        owed = 0.0
        while not self.supervisor.stopping.is_set():
            step = next_step(strategy, need_reboot=True, window=self.settings.window,
                             now=datetime.now(), holding=self.holding, backoff=owed,
                             drain_pending=bool(self.settings.drain_units) and not self.drained)
            owed = 0.0
            if step.kind is Kind.IDLE:
                return 0
            try:
                if step.kind is Kind.WAIT:
                    log.info("%s", step.reason)
                    self.supervisor.status(step.reason)
                    if step.wake_on_change:
                        await self.wait_for_slot(step.seconds)
                    else:
                        await self.pause(step.seconds)
                elif step.kind is Kind.LOCK:
                    self.holding = await self.try_lock()
                    if not self.holding:
                        backoff = owed = next_backoff(backoff)
                elif step.kind is Kind.DRAIN:
                    self.drained = await self.drain()
                    if not self.drained:
                        backoff = owed = next_backoff(backoff)
                        if self.holding:   # the slot could not be given back: wait anyway
                            await self.pause(owed)
                            owed = 0.0
                elif step.kind is Kind.RELEASE:
                    self.drained = False
                    await self.release()
                    if self.holding:
                        backoff = owed = next_backoff(backoff)
                elif step.kind is Kind.REBOOT:
                    if await self.reboot(logind):
                        await self.supervisor.stopping.wait()
                        return 0
                    # Refused (a blocking inhibitor): wait, then decide again, so a window
                    # that closed meanwhile gives the slot back instead of rebooting late.
                    backoff = next_backoff(backoff)
                    await self.pause(backoff)
            except Exception:
                # An unexpected error ends this attempt, not the daemon: a restarted
                # locksmithd would only know a reboot is needed if update-engine says so
                # again, so dying here could leave the reboot undone.
                backoff = next_backoff(backoff)
                log.exception("unexpected error; deciding again in %.0fs", backoff)
                await self.pause(backoff)
        return 0


async def store_unit_running(bus: Bus) -> bool:
    try:
        units = await Systemd(bus).list_units(list(STORE_UNITS))
    except SystemdError as err:
        log.warning("cannot ask systemd about %s: %s", ", ".join(STORE_UNITS), err)
        return False
    return any(u.active_state != "inactive" for u in units)


async def serve(settings: DaemonSettings, supervisor: service.Service) -> int:
    if settings.strategy is Strategy.OFF:
        log.info('Reboot strategy is "off" - locksmithd is exiting.')
        return 0
    if settings.window_text is not None:
        start, length = settings.window_text
        log.info("Reboot window start is %r and length is %r", start, length)
        period = settings.window.next(datetime.now()) if settings.window else None
        if period is not None:
            log.info("Next window begins at %s and ends at %s", period.start, period.end)
    else:
        log.info("No configured reboot window")
    try:
        bus = await Bus.connect()
    except (OSError, EOFError, ValueError) as err:
        log.error("Error initializing the system bus connection: %s", err)
        return 1
    daemon = Daemon(settings, supervisor)
    release_task: asyncio.Task[None] | None = None
    try:
        strategy = settings.strategy
        if strategy is Strategy.BEST_EFFORT:
            strategy = effective(strategy, await store_unit_running(bus))
            log.info("strategy best-effort acts as %s here", strategy)
        write_coordinator_state(settings.root, str(settings.strategy), "starting")
        bus.add_signal_handler(daemon.on_signal)
        await bus.add_match(STATUS_MATCH)
        if strategy is Strategy.ETCD_LOCK:
            daemon.holder = machine_id(settings.root)
            if not daemon.holder:
                log.error("Cannot read machine-id")
                return 1
            store = settings.store
            daemon.client = KVClient(list(store.endpoints), cafile=store.cafile,
                                     certfile=store.certfile, keyfile=store.keyfile,
                                     username=store.username, password=store.password)
            daemon.store = SemaphoreStore(daemon.client, store.group)
            release_task = asyncio.create_task(daemon.release_held())
        try:
            reply = await bus.call("com.coreos.update1", UPDATE_PATH, UPDATE_INTERFACE,
                                   "GetStatus")
            snap = snapshot_from_body(reply.body)
            log.info("locksmithd starting currentOperation=%r strategy=%r",
                     snap.current_operation, str(strategy))
            if snap.current_operation == NEED_REBOOT:
                daemon.need_reboot.set()
        except (SystemdError, ValueError) as err:
            log.warning("Cannot get update engine status (waiting for its signal): %s", err)
        write_coordinator_state(settings.root, str(settings.strategy), "running")
        supervisor.ready(f"strategy {strategy}: waiting for {NEED_REBOOT}")
        waiter = asyncio.create_task(daemon.need_reboot.wait())
        stopper = asyncio.create_task(supervisor.stopping.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        if supervisor.stopping.is_set():
            log.info("Received interrupt/termination signal - locksmithd is exiting.")
            return 0
        if release_task is not None:
            release_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await release_task
            release_task = None
            # A slot still held from before (the release had not got through) is kept:
            # locking is idempotent, the lock step below finds it held.
        supervisor.status("reboot needed")
        write_coordinator_state(settings.root, str(settings.strategy), "reboot-planned")
        return await daemon.run(bus, strategy)
    finally:
        if release_task is not None:
            release_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await release_task
        if daemon.client is not None:
            await daemon.client.close()
        bus.disconnect()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    journal.setup(PROG)
    try:
        flags = parse_flags(argv, {**FLAGS, **DAEMON_FLAGS})
        if flags.values.get("version") == "true":
            print(f"{PROG} version {VERSION}")
            return 0
        if flags.values.get("debug") == "true" or environ.get("LOCKSMITHD_DEBUG") == "true":
            logging.getLogger().setLevel(logging.DEBUG)
        root = flags.values.get("root") or environ.get("LOCKSMITHD_ROOT") or "/"
        settings = daemon_settings(argv, environ, read_update_conf(root))
    except HelpRequested:
        print(flag_usage(PROG, {**FLAGS, **DAEMON_FLAGS}), end="")
        return 0
    except (UsageError, ConfigError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    return service.run(PROG, lambda supervisor: serve(settings, supervisor))


if __name__ == "__main__":
    sys.exit(main())
