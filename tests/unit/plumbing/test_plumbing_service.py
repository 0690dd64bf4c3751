"""sd_notify, watchdog, socket activation and journal encoding, against real sockets."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap

import pytest
from flotilla.daemons import journal, service


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_sends_one_datagram(notify_socket):
    assert service.notify("READY=1", "STATUS=serving")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_without_supervisor_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.notify("READY=1") is False


def test_notify_abstract_socket(monkeypatch):
    name = f"flotilla-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert service.notify("WATCHDOG=1")
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_watchdog_interval_is_half_and_only_for_our_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert service.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert service.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert service.watchdog_interval() is None


def test_listen_fds_ignored_for_other_pid(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert service.listen_fds() == []


DAEMON = textwrap.dedent(
    """
    import sys
    from flotilla.daemons import service

    async def main(svc):
        svc.ready("serving")
        await svc.stopping.wait()
        print("stopped by", svc.signal_received, flush=True)
        return 0

    sys.exit(service.run("demo", main))
    """
)


def test_run_announces_ready_keeps_watchdog_and_stops_on_sigterm(notify_socket):
    env = dict(os.environ, WATCHDOG_USEC="200000")
    proc = subprocess.Popen(
        [sys.executable, "-c", DAEMON], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        messages = []
        # WATCHDOG_PID is unset, so the watchdog applies to the daemon itself.
        while not any("READY=1" in m for m in messages) or sum(
            m == "WATCHDOG=1" for m in messages
        ) < 2:
            messages.append(notify_socket.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=serving" in ready
        assert f"MAINPID={proc.pid}" in ready
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert out.strip() == f"stopped by {int(signal.SIGTERM)}"
        tail = []
        notify_socket.settimeout(2)
        while "STOPPING=1" not in tail:
            tail.append(notify_socket.recv(4096).decode())
    finally:
        if proc.poll() is None:
            proc.kill()


def _decode_native(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8 : 8 + size].decode()
            data = rest[8 + size + 1 :]
    return fields


def test_journal_handler_sends_structured_fields(tmp_path):
    path = tmp_path / "journal"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    sink.settimeout(5)
    handler = journal.JournalHandler("kvd", socket_path=str(path))
    logger = logging.getLogger("flotilla.test.journal")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("line one\nline two", extra={"fields": {"unit": "web@1.service"}})
        fields = _decode_native(sink.recv(65536))
    finally:
        logger.removeHandler(handler)
        handler.close()
        sink.close()
    assert fields["MESSAGE"] == "line one\nline two"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "kvd"
    assert fields["FLOTILLA_UNIT"] == "web@1.service"
    assert fields["CODE_FUNC"] == "test_journal_handler_sends_structured_fields"
