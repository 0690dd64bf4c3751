"""The "System reboot in 5 minutes!" broadcast to every logged-in terminal.

The text is locksmith's: a blank line, ``Broadcast message from locksmithd at <time>:``
and two BELs, the message, a blank line, each padded to 79 columns with CR LF endings, so
it overwrites whatever the terminal showed. Terminals come from utmp's USER_PROCESS
records (the glibc x86-64/aarch64 record layout, read with ``struct``: no library reads
utmp, and the layout is fixed ABI). Each terminal is written without blocking; one that
is gone or stuck is skipped.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

UTMP_RECORD = struct.Struct("=hxxi32s4s32s256shhiii4i20x")
USER_PROCESS = 7
REBOOT_MESSAGE = "System reboot in 5 minutes!"


def broadcast_text(when: str, message: str) -> bytes:
    """The bytes written to each terminal; ``when`` is the sender's formatted time."""
    title = f"Broadcast message from locksmithd at {when}:"
    lines = [
        "\r" + " " * 79 + "\r\n",
        f"{title:<79.79}\a\a\r\n",
        f"{message:<79.79}\r\n",
        "\r" + " " * 79 + "\r\n",
    ]
    return "".join(lines).encode()


def user_terminals(utmp: bytes) -> Iterator[str]:
    """The tty names (``pts/0``) of logged-in users in a utmp file's bytes."""
    size = UTMP_RECORD.size
    for offset in range(0, len(utmp) - size + 1, size):
        fields = UTMP_RECORD.unpack_from(utmp, offset)
        kind, line = fields[0], fields[2].split(b"\0", 1)[0].decode(errors="replace")
        if kind == USER_PROCESS and line and "/" not in line.replace("pts/", "", 1):
            yield line


def broadcast(message: str, when: str, *, root: str = "/") -> int:
    """Writes ``message`` to every user terminal; returns how many were written."""
    utmp = Path(root, "run/utmp")
    try:
        data = utmp.read_bytes()
    except OSError:
        return 0
    text = broadcast_text(when, message)
    written = 0
    for line in user_terminals(data):
        with contextlib.suppress(OSError):
            fd = os.open(Path(root, "dev", line), os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                os.write(fd, text)
                written += 1
            finally:
                os.close(fd)
    return written
