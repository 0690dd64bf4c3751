"""The decisions of an update attempt that need no I/O, kept apart so they can be tested alone.

The engine (``engine.py``) does HTTP, disk writes and D-Bus; what it asks, in which order it
reports, where it resumes and which slot is running are answered here from plain values:

- which request a check sends (an update check from IDLE, a ping while a reboot is
  pending, nothing in between), as update_engine decides it;
- the error event of a failed attempt (result "deferred" for policy codes, the resumed
  flag OR-ed in);
- which payload URL to try next under the server's ``MaxFailureCountPerUrl``;
- the resume record persisted beside a download's checkpoint, and whether it still fits
  the offer and the target slot (a different payload never continues an old one);
- how the running /usr is named (``mount.usr=``/``usr=`` on the kernel command line, as
  CoreOS's GRUB passes it, or ``BOOTED_USR`` in update.conf) and which slot that is;
- the server's last answer and a pending reboot in words, for ``-status`` and the journal.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Sequence

from . import omaha
from .codes import FLAG_RESUMED, ErrorCode, EventResult, EventType, Status, describe_error
from .gptprio import Slot
from .payload import Checkpoint

#: Error codes update_engine reports with result "deferred" instead of "error".
DEFERRED_CODES = frozenset({ErrorCode.OMAHA_UPDATE_IGNORED_PER_POLICY,
                            ErrorCode.OMAHA_UPDATE_DEFERRED_PER_POLICY,
                            ErrorCode.OMAHA_UPDATE_DEFERRED_FOR_BACKOFF})
RESUME_FORMAT = 1


# ------------------------------------------------------------------ requests and events

def check_request(status: Status, previous_version: str | None
                  ) -> omaha.UpdateCheck | omaha.PingOnly | None:
    """What a check sends in ``status``: None means the check does not happen now.

    From IDLE a full update check (carrying the 3/2 or rollback report); while an update
    waits for its reboot only a ping, so the server still sees the machine; in every
    other status an attempt is already running and a second one would race it.
    """
    if status is Status.IDLE:
        return omaha.UpdateCheck(previous_version=previous_version)
    if status is Status.UPDATED_NEED_REBOOT:
        return omaha.PingOnly()
    return None


def failure_event(code: int, *, resumed: bool = False) -> omaha.Event:
    """The 3/0 (or 3/9 for policy deferrals) event reporting a failed attempt."""
    result = EventResult.UPDATE_DEFERRED if code in DEFERRED_CODES else EventResult.ERROR
    return omaha.Event(EventType.UPDATE_COMPLETE, result,
                       code | (FLAG_RESUMED if resumed else 0))


DOWNLOAD_STARTED = omaha.Event(EventType.UPDATE_DOWNLOAD_STARTED, EventResult.SUCCESS)
DOWNLOAD_FINISHED = omaha.Event(EventType.UPDATE_DOWNLOAD_FINISHED, EventResult.SUCCESS)
UPDATE_APPLIED = omaha.Event(EventType.UPDATE_COMPLETE, EventResult.SUCCESS)


class UrlRotation:
    """Payload URLs in the server's order, each tried up to ``max_failures`` times."""

    def __init__(self, urls: Sequence[str], max_failures: int) -> None:
        if not urls:
            raise ValueError("an offer has at least one URL")
        self.urls = tuple(urls)
        self.max_failures = max(1, max_failures)
        self.index = 0
        self.failures = 0

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def failed(self) -> bool:
        """Count a failure of the current URL; False once every URL used up its tries."""
        self.failures += 1
        if self.failures < self.max_failures:
            return True
        self.index += 1
        self.failures = 0
        return self.index < len(self.urls)


# ------------------------------------------------------------------ resuming downloads

@dataclasses.dataclass(frozen=True)
class ResumeRecord:
    """A checkpoint plus what it belongs to: one payload written into one slot."""

    payload_sha256: bytes
    payload_size: int
    version: str
    slot_uuid: str
    checkpoint: Checkpoint

    def fits(self, offer: omaha.Offer, slot_uuid: str) -> bool:
        """True when ``offer`` is the same payload and it goes to the same slot."""
        return (self.payload_sha256 == offer.sha256
                and self.payload_size == offer.package.size
                and self.slot_uuid.lower() == slot_uuid.lower())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_resume(record: ResumeRecord) -> bytes:
    """JSON for the prefs file: explicit fields, never pickled (the file is disk data)."""
    c = record.checkpoint
    return json.dumps({
        "format": RESUME_FORMAT, "payload_sha256": _b64(record.payload_sha256),
        "payload_size": record.payload_size, "version": record.version,
        "slot_uuid": record.slot_uuid, "offset": c.offset,
        "next_operation": c.next_operation, "metadata": _b64(c.metadata),
        "payload_hash_state": _b64(c.payload_hash_state),
        "signed_hash_state": _b64(c.signed_hash_state),
    }, sort_keys=True).encode()


def decode_resume(raw: bytes) -> ResumeRecord:
    """The record back from its JSON; ValueError names what is wrong with it."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"resume record is not JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != RESUME_FORMAT:
        raise ValueError("resume record has an unknown format")

    def number(key: str) -> int:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"resume record: {key} is not a non-negative integer")
        return value

    def text(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str):
            raise ValueError(f"resume record: {key} is not a string")
        return value

    def blob(key: str) -> bytes:
        try:
            return base64.b64decode(text(key), validate=True)
        except binascii.Error as err:
            raise ValueError(f"resume record: {key} is not base64") from err

    return ResumeRecord(
        payload_sha256=blob("payload_sha256"), payload_size=number("payload_size"),
        version=text("version"), slot_uuid=text("slot_uuid"),
        checkpoint=Checkpoint(offset=number("offset"),
                              next_operation=number("next_operation"),
                              metadata=blob("metadata"),
                              payload_hash_state=blob("payload_hash_state"),
                              signed_hash_state=blob("signed_hash_state")))


# ------------------------------------------------------------------ which /usr is running

@dataclasses.dataclass(frozen=True)
class UsrSpec:
    """How the running /usr is named: by PARTUUID, PARTLABEL, partition number or device."""

    kind: str  # "partuuid" | "partlabel" | "number" | "device"
    value: str

    def __str__(self) -> str:
        return {"partuuid": "PARTUUID=", "partlabel": "PARTLABEL=", "number": "partition ",
                "device": ""}[self.kind] + self.value


def parse_usr_spec(text: str) -> UsrSpec | None:
    """``PARTUUID=…``, ``PARTLABEL=…``, a partition number or a device path; else None."""
    text = text.strip()
    key, sep, value = text.partition("=")
    if sep and key.upper() in ("PARTUUID", "PARTLABEL") and value:
        return UsrSpec(key.lower(), value.lower() if key.upper() == "PARTUUID" else value)
    if text.isdigit() and int(text) > 0:
        return UsrSpec("number", str(int(text)))
    if text.startswith("/dev/"):
        return UsrSpec("device", text)
    return None


def usr_from_cmdline(cmdline: str) -> UsrSpec | None:
    """The /usr the bootloader chose: ``mount.usr=`` (CoreOS's GRUB), else ``usr=``."""
    found: dict[str, str] = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key in ("mount.usr", "usr") and key not in found:
            found[key] = value.strip('"')
    for key in ("mount.usr", "usr"):
        if key in found:
            return parse_usr_spec(found[key])
    return None


def find_booted(slots: Sequence[Slot], spec: UsrSpec) -> Slot:
    """The USR slot ``spec`` names; ValueError when it names none (or a device path,
    which only the shell can turn into a partition number)."""
    usr = [s for s in slots if s.is_usr]
    for slot in usr:
        if ((spec.kind == "partuuid" and slot.uuid.lower() == spec.value)
                or (spec.kind == "partlabel" and slot.label == spec.value)
                or (spec.kind == "number" and str(slot.number) == spec.value)):
            return slot
    raise ValueError(f"the running /usr ({spec}) is none of the USR partitions "
                     f"{[s.label or s.number for s in usr]}")


# ------------------------------------------------------------------ in words

def describe_answer(answer: omaha.Answer) -> str:
    """The server's answer to a check, as ``-status`` and the journal show it."""
    if isinstance(answer, omaha.Offer):
        return f"update to {answer.version or '(no version)'} offered"
    if isinstance(answer, omaha.NoUpdate):
        return "no update available"
    if isinstance(answer, omaha.Deferred):
        return f"deferred by {answer.reason} ({answer.app_status})"
    if isinstance(answer, omaha.Acknowledged):
        return "ping acknowledged"
    return f"invalid answer: {answer.message} ({describe_error(answer.code)})"


def describe_failure(code: int, message: str) -> str:
    return f"{describe_error(code)} (error {code}): {message}"


def reboot_explanation(version: str, slot_label: str) -> str:
    """Why UPDATED_NEED_REBOOT stays, and the two ways out of it."""
    where = f" in {slot_label}" if slot_label else ""
    return (f"version {version} is installed{where} and boots next; nothing more is "
            "downloaded until a reboot (locksmithd, or the admin, reboots). "
            "update_engine_client -reset_status returns to IDLE without undoing the "
            "partition-table change")
