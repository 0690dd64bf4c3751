"""Logging to the systemd journal with structured fields, or to stderr elsewhere.

Under systemd each record goes to the journal's native socket as ``KEY=value`` fields
(MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_*, plus any fields the caller adds), so
operators can filter with ``journalctl FLOTILLA_UNIT=web.service``. Like :mod:`.service`,
this speaks the small native protocol itself rather than requiring systemd-python.

Add fields per record with ``log.info("started", extra={"fields": {"unit": name}})``;
names are upper-cased and prefixed ``FLOTILLA_``.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _field(name: str, value: str) -> bytes:
    """One field in the native protocol; values with newlines use the length form."""
    data = value.encode("utf-8", "replace")
    if b"\n" in data:
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def _field_name(key: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in key.upper())
    return f"FLOTILLA_{cleaned}".lstrip("_")


class JournalHandler(logging.Handler):
    """Sends log records to journald's native socket."""

    def __init__(self, identifier: str, socket_path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def encode(self, record: logging.LogRecord) -> bytes:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        parts = [
            _field("MESSAGE", message),
            _field("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
            _field("SYSLOG_IDENTIFIER", self.identifier),
            _field("CODE_FILE", record.pathname),
            _field("CODE_LINE", str(record.lineno)),
            _field("CODE_FUNC", record.funcName),
            _field("LOGGER", record.name),
        ]
        for key, value in (getattr(record, "fields", None) or {}).items():
            parts.append(_field(_field_name(key), str(value)))
        return b"".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(self.encode(record), self.socket_path)
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def _under_journal() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream or not os.path.exists(JOURNAL_SOCKET):
        return False
    try:
        device, inode = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup(identifier: str, level: int | str = logging.INFO, force_journal: bool = False) -> None:
    """Routes the root logger to the journal when run by systemd, else to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if force_journal or _under_journal():
        handler: logging.Handler = JournalHandler(identifier)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{identifier}: %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
