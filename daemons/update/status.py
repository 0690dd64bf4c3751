"""The engine's status as D-Bus shows it: transitions, throttled progress, the reboot marker.

``GetStatus`` and the ``StatusUpdate`` signal carry ``(last_checked_time, progress,
current_operation, new_version, new_size)`` (D-Bus ``xdssx``). This object owns those five
values and the rules update_engine applies to them: which status may follow which, that a
download's progress is announced only when it moved by 1 % or 10 s passed, that a finished
update survives a daemon restart (the marker file) and that ``ResetStatus`` is allowed
only from IDLE or UPDATED_NEED_REBOOT. Each change returns what the shell must do (emit
the signal, write or remove the marker); time comes in as an argument.
"""

from __future__ import annotations

import dataclasses

from .codes import Status

#: The marker whose presence means "updated, waiting for a reboot" across restarts.
COMPLETED_MARKER = "/var/run/update_engine_autoupdate_completed"
#: What update_engine reports as the new version before an update is known.
VERSION_UNKNOWN = "0.0.0"
PROGRESS_STEP = 0.01
PROGRESS_SECONDS = 10.0

_NEXT: dict[Status, frozenset[Status]] = {
    Status.IDLE: frozenset({Status.CHECKING_FOR_UPDATE}),
    Status.CHECKING_FOR_UPDATE: frozenset(
        {Status.IDLE, Status.UPDATE_AVAILABLE, Status.REPORTING_ERROR_EVENT}
    ),
    Status.UPDATE_AVAILABLE: frozenset({Status.DOWNLOADING, Status.REPORTING_ERROR_EVENT}),
    Status.DOWNLOADING: frozenset(
        {Status.VERIFYING, Status.FINALIZING, Status.REPORTING_ERROR_EVENT}
    ),
    Status.VERIFYING: frozenset({Status.FINALIZING, Status.REPORTING_ERROR_EVENT}),
    Status.FINALIZING: frozenset({Status.UPDATED_NEED_REBOOT, Status.REPORTING_ERROR_EVENT}),
    Status.UPDATED_NEED_REBOOT: frozenset({Status.IDLE}),
    Status.REPORTING_ERROR_EVENT: frozenset({Status.IDLE}),
}


class ResetNotAllowed(Exception):
    """``ResetStatus`` outside IDLE and UPDATED_NEED_REBOOT, with upstream's message."""

    def __init__(self) -> None:
        super().__init__("Reset not allowed in this state.")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The five values of ``GetStatus``/``StatusUpdate``, in their wire order."""

    last_checked_time: int
    progress: float
    current_operation: str
    new_version: str
    new_size: int

    def as_tuple(self) -> tuple[int, float, str, str, int]:
        return (self.last_checked_time, self.progress, self.current_operation,
                self.new_version, self.new_size)


@dataclasses.dataclass(frozen=True)
class Effects:
    """What a change asks of the shell."""

    broadcast: Snapshot | None = None
    write_marker: bool = False
    remove_marker: bool = False


class StatusMachine:
    """The status and its four companions; every change goes through :meth:`move`."""

    def __init__(self, *, marker_present: bool) -> None:
        self.status = Status.UPDATED_NEED_REBOOT if marker_present else Status.IDLE
        self.last_checked_time = 0
        self.progress = 0.0
        self.new_version = VERSION_UNKNOWN
        self.new_size = 0
        self._announced_progress = 0.0
        self._announced_at = 0.0

    def snapshot(self) -> Snapshot:
        return Snapshot(self.last_checked_time, self.progress, self.status.value,
                        self.new_version, self.new_size)

    def startup(self) -> Effects:
        """update_engine announces its status once when it comes up."""
        return Effects(broadcast=self.snapshot())

    def move(self, status: Status, now: float) -> Effects:
        """Change status; refused (ValueError) when update_engine never makes that step."""
        if status not in _NEXT[self.status]:
            raise ValueError(f"{self.status.value} cannot become {status.value}")
        self.status = status
        if status is Status.DOWNLOADING:
            self.progress = 0.0
            self._announced_progress, self._announced_at = 0.0, now
        elif status in (Status.IDLE, Status.REPORTING_ERROR_EVENT, Status.CHECKING_FOR_UPDATE):
            self.progress = 0.0
        elif status in (Status.FINALIZING, Status.UPDATED_NEED_REBOOT):
            self.progress = 1.0 if status is Status.UPDATED_NEED_REBOOT else self.progress
        return Effects(broadcast=self.snapshot(),
                       write_marker=status is Status.UPDATED_NEED_REBOOT)

    def checked(self, now: int) -> None:
        """A check got an answer: its time becomes ``last_checked_time``."""
        self.last_checked_time = now

    def offered(self, version: str, size: int) -> None:
        self.new_version, self.new_size = version, size

    def downloaded(self, received: int, total: int, now: float) -> Effects:
        """Progress of the download; announced only when it moved enough or time passed."""
        if self.status is not Status.DOWNLOADING:
            raise ValueError(f"progress reported while {self.status.value}")
        self.progress = min(received / total, 1.0) if total > 0 else 0.0
        moved = self.progress - self._announced_progress >= PROGRESS_STEP
        waited = now - self._announced_at >= PROGRESS_SECONDS
        if not (moved or waited or self.progress >= 1.0):
            return Effects()
        self._announced_progress, self._announced_at = self.progress, now
        return Effects(broadcast=self.snapshot())

    def reset(self, now: float) -> Effects:
        """``ResetStatus``: leave UPDATED_NEED_REBOOT (removing the marker), or do nothing."""
        if self.status is Status.IDLE:
            return Effects()
        if self.status is not Status.UPDATED_NEED_REBOOT:
            raise ResetNotAllowed()
        effects = self.move(Status.IDLE, now)
        self.new_version, self.new_size = VERSION_UNKNOWN, 0
        return dataclasses.replace(effects, broadcast=self.snapshot(), remove_marker=True)
