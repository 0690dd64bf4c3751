"""The update engine: checks the Omaha server, writes the passive USR slot, flips the boot.

One attempt goes as update_engine's does: CHECKING_FOR_UPDATE (the request), then on an
offer UPDATE_AVAILABLE, DOWNLOADING (the payload streams through ``PayloadReader`` into
the passive slot, an operation at a time, checked before it is written), FINALIZING (the
payload's size, SHA-256 and signature, then the written slot read back against the
manifest, then gptprio's "try once" on the slot) and UPDATED_NEED_REBOOT (the marker
file, ``/run/reboot-required``, a 3/1 event). A failure on the way reports a 3/0 event
with update_engine's code in REPORTING_ERROR_EVENT and returns to IDLE; the slot is not
made bootable unless every check passed, so a bad payload changes nothing that boots.

Where users suffered, it does better:

- a download resumes where the last synced operation ended, across restarts (the
  checkpoint is persisted beside a record of which payload and slot it belongs to);
- the running slot is marked good only after ``MARK_GOOD_DELAY`` *and* once the
  ``HEALTH_CHECK_UNITS`` are active, so a broken update falls back at the next boot;
- the next check's time and reason, the server's last answer and why a reboot is
  pending are all visible (:meth:`UpdateEngine.details`, ``update_engine_client -status``).

Decisions live in pure modules (``status``, ``schedule``, ``attempter``, ``payload``,
``gptprio``); this module is the asyncio shell that sequences them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import attempter, gptprio, omaha
from .codes import ErrorCode, Status, http_error_code
from .config import UpdateConfig
from .engine_io import HttpFailure, OmahaHttp, Prefs, SlotWriter, UsrDisk
from .payload import PartitionWrite, PayloadError, PayloadReader, check_written_partition
from .resumable_sha256 import ResumableSha256
from .schedule import CheckSchedule, NextCheck
from .status import Effects, ResetNotAllowed, Snapshot, StatusMachine

log = logging.getLogger("update_engine")

PREF_PREVIOUS_VERSION = "previous-version"
PREF_RESUME = "resume-record"
PREF_LAST_ANSWER = "last-answer"
#: persist a resume checkpoint after at least this many new bytes were written
CHECKPOINT_BYTES = 8 << 20

Listener = Callable[[Snapshot], None]


class AttemptFailed(Exception):
    """An attempt ended with update_engine error ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class UpdateEngine:
    """State, schedule and attempts; what the D-Bus service calls into."""

    def __init__(self, config: UpdateConfig, *, prefs: Prefs, disk: UsrDisk | None,
                 booted_slot: int | None, http: OmahaHttp, info: omaha.ClientInfo,
                 public_key: rsa.RSAPublicKey | None, marker: Path, reboot_required: Path,
                 unit_active: Callable[[str], asyncio.Future[bool]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 random01: Callable[[], float] = random.random) -> None:
        self.config = config
        self.prefs = prefs
        self.disk = disk
        self.booted_slot = booted_slot
        self.http = http
        self.info = info
        self.public_key = public_key
        self.marker = marker
        self.reboot_required = reboot_required
        self.unit_active = unit_active
        self.clock = clock
        self.wall_clock = wall_clock
        self.random01 = random01
        self.machine = StatusMachine(marker_present=marker.exists())
        self.schedule = CheckSchedule(config.schedule)
        self.next_check: NextCheck | None = None
        self.last_answer = prefs.get_text(PREF_LAST_ANSWER) or ""
        self.last_error = ""
        self.pending_reboot = ""
        self.marked_good = ""
        self._listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._interactive = False

    # ---------------------------------------------------------------- service protocol

    def snapshot(self) -> Snapshot:
        return self.machine.snapshot()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def attempt_update(self) -> None:
        """``AttemptUpdate``: an interactive check now; ignored unless IDLE, as upstream."""
        if self.machine.status is not Status.IDLE:
            log.info("not attempting an update: %s", self.machine.status.value)
            return
        log.info("Attempting interactive update")
        self._interactive = True
        self._wake.set()

    def reset_status(self) -> None:
        """``ResetStatus``: out of UPDATED_NEED_REBOOT (the table change stays)."""
        effects = self.machine.reset(self.clock())  # raises ResetNotAllowed
        if effects.remove_marker:
            self.pending_reboot = ""
            for path in (self.marker, self.reboot_required):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self._apply(effects)

    def details(self) -> dict[str, str]:
        """What ``GetStatus`` cannot carry: the schedule, the last answer, a reboot."""
        found = {"next_check_reason": "", "next_check_time": "",
                 "last_answer": self.last_answer, "last_error": self.last_error,
                 "reboot_explanation": self.pending_reboot, "marked_good": self.marked_good,
                 "server": self.config.server or "disabled", "group": self.config.group,
                 "version": self.info.version}
        if self.next_check is not None:
            at = self.wall_clock() + max(0.0, self.next_check.at - self.clock())
            found["next_check_time"] = str(int(at))
            found["next_check_reason"] = self.next_check.reason
        if self.config.updates_disabled:
            found["next_check_reason"] = "updates disabled (SERVER=disabled)"
        return found

    # ---------------------------------------------------------------- status changes

    def _apply(self, effects: Effects) -> None:
        if effects.write_marker:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
            self.reboot_required.parent.mkdir(parents=True, exist_ok=True)
            self.reboot_required.touch()
        if effects.broadcast is not None:
            for listener in list(self._listeners):
                try:
                    listener(effects.broadcast)
                except Exception:
                    log.exception("status listener failed")

    def _move(self, status: Status) -> None:
        self._apply(self.machine.move(status, self.clock()))

    def announce(self) -> None:
        """The one StatusUpdate at startup, as update_engine sends it."""
        self._apply(self.machine.startup())

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Check on schedule (or when asked) until cancelled."""
        if self.config.updates_disabled:
            log.info("updates are disabled (SERVER=disabled); only answering D-Bus")
        self.next_check = self.schedule.first(self.clock(), self.random01())
        while True:
            if not self.config.updates_disabled:
                log.info("next check in %.0fs: %s", self.next_check.at - self.clock(),
                         self.next_check.reason)
            timeout = max(0.0, self.next_check.at - self.clock())
            if self.config.updates_disabled and not self._interactive:
                timeout = None  # type: ignore[assignment]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            interactive, self._interactive = self._interactive, False
            self.next_check = await self.check(interactive=interactive)

    async def check(self, *, interactive: bool = False) -> NextCheck:
        """One scheduled or interactive check; returns when the next one is due."""
        now = self.clock()
        if self.config.updates_disabled or self.config.server is None:
            self.last_error = "updates disabled (SERVER=disabled)"
            return self.schedule.after(now, self.random01())
        request = attempter.check_request(self.machine.status, self._previous_version())
        if request is None:
            return self.schedule.after(now, self.random01())
        if isinstance(request, omaha.PingOnly):
            await self._ping()
            return self.schedule.after(self.clock(), self.random01())
        self._move(Status.CHECKING_FOR_UPDATE)
        try:
            body = await self.http.post(self.config.server, omaha.build_request(
                self.info, request, interactive=interactive))
        except HttpFailure as failure:
            self.last_error = f"update check failed: {failure}"
            log.warning("%s", self.last_error)
            self._move(Status.IDLE)
            return self.schedule.after(self.clock(), self.random01(),
                                       http_status=failure.status, quick=failure.status == 0)
        self.machine.checked(int(self.wall_clock()))
        answer = omaha.parse_response(body, self.info.app_id)
        self._remember_answer(attempter.describe_answer(answer))
        if request.previous_version is not None:
            self.prefs.set(PREF_PREVIOUS_VERSION, "")  # reported: cleared as upstream
        poll = getattr(answer, "poll_interval", 0)
        if not isinstance(answer, omaha.Offer):
            if isinstance(answer, omaha.Invalid):
                self.last_error = attempter.describe_failure(answer.code, answer.message)
                log.warning("update check answer refused: %s", self.last_error)
            self._move(Status.IDLE)
            return self.schedule.after(self.clock(), self.random01(), poll_interval=poll)
        await self._apply_offer(answer)
        return self.schedule.after(self.clock(), self.random01(), poll_interval=poll)

    def _previous_version(self) -> str | None:
        return self.prefs.get_text(PREF_PREVIOUS_VERSION)

    def _remember_answer(self, text: str) -> None:
        self.last_answer = text
        self.prefs.set(PREF_LAST_ANSWER, text)
        log.info("server: %s", text)

    async def _ping(self) -> None:
        try:
            body = await self.http.post(self.config.server or "", omaha.build_request(
                self.info, omaha.PingOnly()))
            self.machine.checked(int(self.wall_clock()))
            self._remember_answer(attempter.describe_answer(
                omaha.parse_response(body, self.info.app_id, expect_check=False)))
        except HttpFailure as failure:
            log.warning("ping failed: %s", failure)

    async def _event(self, event: omaha.Event) -> None:
        """Events are reports: a server that misses one does not stop the attempt."""
        try:
            await self.http.post(self.config.server or "", omaha.build_request(self.info, event))
        except HttpFailure as failure:
            log.warning("event %d/%d not delivered: %s", event.type, event.result, failure)

    # ---------------------------------------------------------------- applying an offer

    async def _apply_offer(self, offer: omaha.Offer) -> None:
        self.machine.offered(offer.version, offer.package.size)
        self._move(Status.UPDATE_AVAILABLE)
        resumed = False
        try:
            if self.disk is None or self.booted_slot is None:
                raise AttemptFailed(ErrorCode.INSTALL_DEVICE_OPEN_ERROR,
                                    "no A/B disk: set USR_DEVICE, or boot with mount.usr=")
            if self.public_key is None:
                raise AttemptFailed(ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR,
                                    "no payload key: an unsigned update is never applied")
            slots = self.disk.slots()
            target = gptprio.other_slot(slots, self.booted_slot)
            await self._event(attempter.DOWNLOAD_STARTED)
            self._move(Status.DOWNLOADING)
            writer = self.disk.open_slot(target.number)
            try:
                reader, resumed = self._reader_for(offer, target.uuid, writer.size)
                manifest = await self._download(offer, reader, writer, target.uuid)
                self._move(Status.FINALIZING)
                await self._event(attempter.DOWNLOAD_FINISHED)
                size = manifest.new_partition_info.size
                digest = await asyncio.to_thread(writer.sha256, size)
                check_written_partition(manifest, digest)
            finally:
                writer.close()
            self.prefs.delete(PREF_RESUME)
            current = self.disk.slots()
            flipped = gptprio.after_install(current, target.number)
            self.disk.set_attributes({s.number: s.attributes for s in flipped if s.is_usr})
        except (AttemptFailed, PayloadError) as err:
            await self._fail(err.code, str(err), resumed)
            return
        except (OSError, ValueError) as err:
            code = (ErrorCode.DOWNLOAD_WRITE_ERROR if isinstance(err, OSError)
                    else ErrorCode.INSTALL_DEVICE_OPEN_ERROR)
            await self._fail(code, str(err), resumed)
            return
        except Exception as err:  # a bug must end the attempt, not the daemon
            log.exception("update attempt crashed")
            await self._fail(ErrorCode.ERROR, f"{type(err).__name__}: {err}", resumed)
            return
        self.prefs.set(PREF_PREVIOUS_VERSION, self.info.version)
        self.pending_reboot = attempter.reboot_explanation(offer.version, target.label)
        await self._event(attempter.UPDATE_APPLIED)
        self._move(Status.UPDATED_NEED_REBOOT)
        self.last_error = ""
        log.info("update to %s written to %s: %s", offer.version, target.label or target.number,
                 self.pending_reboot)

    async def _fail(self, code: int, message: str, resumed: bool) -> None:
        self.last_error = attempter.describe_failure(code, message)
        log.error("update failed: %s", self.last_error)
        self._move(Status.REPORTING_ERROR_EVENT)
        await self._event(attempter.failure_event(code, resumed=resumed))
        self._move(Status.IDLE)

    def _reader_for(self, offer: omaha.Offer, slot_uuid: str, partition_size: int
                    ) -> tuple[PayloadReader, bool]:
        """A fresh reader, or one resumed from a record of this payload in this slot."""
        def fresh() -> PayloadReader:
            return self._new_reader(offer, partition_size)
        raw = self.prefs.get(PREF_RESUME)
        if raw is None:
            return fresh(), False
        try:
            record = attempter.decode_resume(raw)
        except ValueError as err:
            log.warning("ignoring the resume record: %s", err)
            return fresh(), False
        if not record.fits(offer, slot_uuid):
            log.info("the saved download was of another payload or slot: starting over")
            return fresh(), False
        reader = fresh()
        try:
            reader.resume(record.checkpoint, ResumableSha256.restore)
        except (PayloadError, ValueError) as err:
            log.warning("cannot resume the saved download (%s): starting over", err)
            return fresh(), False
        log.info("resuming the download of %s at byte %d", offer.version,
                 record.checkpoint.offset)
        return reader, True

    def _new_reader(self, offer: omaha.Offer, partition_size: int) -> PayloadReader:
        return PayloadReader(expected_size=offer.package.size, expected_sha256=offer.sha256,
                             partition_size=partition_size, public_key=self.public_key,
                             hasher=ResumableSha256)

    async def _download(self, offer: omaha.Offer, reader: PayloadReader, writer: SlotWriter,
                        slot_uuid: str) -> Any:
        """Stream into the slot; on a broken transfer continue from the last checkpoint,
        rotating URLs under the server's MaxFailureCountPerUrl."""
        rotation = attempter.UrlRotation(offer.payload_urls, offer.max_failure_count_per_url)
        total = offer.package.size
        saved_at = reader.offset
        while True:
            start = reader.offset
            try:
                async for chunk in self.http.download(rotation.current, start, total):
                    writes = reader.feed(chunk)
                    if writes:
                        await asyncio.to_thread(self._write_all, writer, writes)
                        self._apply(self.machine.downloaded(reader.offset, total, self.clock()))
                        if reader.offset - saved_at >= CHECKPOINT_BYTES:
                            saved_at = await self._save_checkpoint(reader, writer, offer,
                                                                   slot_uuid)
                    if reader.offset >= total:
                        break
                if reader.offset >= total:
                    break
                raise HttpFailure(0, f"connection closed after {reader.offset} of {total} bytes")
            except HttpFailure as failure:
                await self._save_checkpoint(reader, writer, offer, slot_uuid)
                log.warning("download from %s broke at byte %d: %s", rotation.current,
                            reader.offset, failure)
                if not rotation.failed():
                    code = (http_error_code(failure.status) if failure.status
                            else ErrorCode.DOWNLOAD_TRANSFER_ERROR)
                    raise AttemptFailed(code, f"download failed: {failure}") from failure
                # Continue from the last whole operation, not from the last byte read.
                checkpoint = reader.checkpoint()
                reader = self._new_reader(offer, writer.size)
                reader.resume(checkpoint, ResumableSha256.restore)
                await asyncio.sleep(min(1.0, 0.1 * rotation.failures))
        await asyncio.to_thread(writer.sync)
        return reader.finish()  # VERIFYING is never set: update_engine never sets it

    @staticmethod
    def _write_all(writer: SlotWriter, writes: list[PartitionWrite]) -> None:
        for write in writes:
            writer.write(write.offset, write.data)

    async def _save_checkpoint(self, reader: PayloadReader, writer: SlotWriter,
                               offer: omaha.Offer, slot_uuid: str) -> int:
        """Sync the slot, then record where to resume: a record never runs ahead of
        the bytes on disk."""
        checkpoint = reader.checkpoint()
        if not checkpoint.metadata:
            return checkpoint.offset
        await asyncio.to_thread(writer.sync)
        record = attempter.ResumeRecord(offer.sha256, offer.package.size, offer.version,
                                        slot_uuid, checkpoint)
        self.prefs.set(PREF_RESUME, attempter.encode_resume(record))
        return checkpoint.offset

    # ---------------------------------------------------------------- marking good

    async def mark_good_when_healthy(self, poll: float = 5.0) -> None:
        """After MARK_GOOD_DELAY, once every health unit is active, make the running slot
        the good one (successful, no tries, first priority); until then a reboot falls
        back to the old slot, which is what a broken update should do."""
        if self.disk is None or self.booted_slot is None:
            return
        await asyncio.sleep(self.config.mark_good_delay)
        waiting_for: list[str] = []
        while True:
            waiting_for = [u for u in self.config.health_check_units
                           if self.unit_active is None or not await self.unit_active(u)]
            if not waiting_for:
                break
            self.marked_good = f"waiting for {', '.join(waiting_for)} to be active"
            await asyncio.sleep(poll)
        slots = self.disk.slots()
        booted = next(s for s in slots if s.number == self.booted_slot)
        good = gptprio.mark_good(slots, booted.number)
        if good == slots:
            self.marked_good = f"{booted.label or booted.number} is marked good"
            return
        self.disk.set_attributes({s.number: s.attributes for s in good if s.is_usr})
        self.marked_good = f"{booted.label or booted.number} is marked good"
        log.info("marked %s good", booted.label or booted.number)


__all__ = ["AttemptFailed", "ResetNotAllowed", "UpdateEngine"]
