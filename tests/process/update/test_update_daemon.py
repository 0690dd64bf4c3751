"""``update_engine`` as a process on a private system bus, driven by update_engine_client.

The whole user path without a machine: the daemon reads its update.conf, finds the
running slot on an sgdisk image (``USR_DEVICE``, ``BOOTED_USR``), owns
com.coreos.update1 under the shipped bus policy, and ``update_engine_client -update``
makes it check a real Omaha server on 127.0.0.1, download, verify and flip the image.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flotilla.daemons.update import disk, gptprio

from tests.conditions import wait_until
from tests.unit.update.test_update_payload import key

from .harness import REPO, _env, client, name_owner, start_bus
from .omaha_server import OmahaServer
from .test_update_engine import RELEASE, USR_B, ab_image, offer_payload, slot_bytes

__all__ = ["ab_image"]  # the fixture, shared with the engine tests


@pytest.fixture
def bus() -> Iterator[str]:
    private = start_bus()
    try:
        yield private.address
    finally:
        private.stop()


@pytest.fixture
def server() -> Iterator[OmahaServer]:
    with OmahaServer() as omaha_server:
        yield omaha_server


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_daemon(tmp_path: Path, address: str, server: OmahaServer, image: Path,
                 *, extra: str = "") -> Daemon:
    conf = tmp_path / "update.conf"
    conf.write_text(f"SERVER={server.url}/v1/update/\nGROUP=stable\n"
                    "COREOS_RELEASE_VERSION=1.0.0\nCHECK_INITIAL_DELAY=1h\n"
                    f"USR_DEVICE={image}\nBOOTED_USR=PARTUUID={gptprio.USR_A_UUID}\n"
                    "MARK_GOOD_DELAY=1h\n" + extra)
    pem = tmp_path / "payload-key.pem"
    pem.write_bytes(key("release").public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    log = tmp_path / "update_engine.log"
    argv = [sys.executable, "-m", "flotilla.daemons.update.main", "-foreground",
            "-logtostderr", "--config", str(conf), "--oem-release", str(tmp_path / "none"),
            "--state-dir", str(tmp_path / "state"), "--public-key", str(pem),
            "--marker", str(tmp_path / "run/marker"),
            "--reboot-required", str(tmp_path / "run/reboot-required"),
            "--machine-id-file", str(tmp_path / "machine-id")]
    (tmp_path / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env=_env(address), cwd=str(REPO), start_new_session=True)
    daemon = Daemon(proc, log)
    wait_until(lambda: proc.poll() is not None or name_owner(address), 30,
               "update_engine to own com.coreos.update1")
    assert proc.poll() is None, daemon.text()
    return daemon


def stop(daemon: Daemon) -> int:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            return daemon.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
            pytest.fail("update_engine did not stop on SIGTERM within 20 s")
    return daemon.proc.returncode


def status_fields(address: str) -> dict[str, str]:
    done = client(address, "-status")
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_update_engine_client_update_applies_an_update_end_to_end(
        tmp_path: Path, bus: str, server: OmahaServer, ab_image: Path) -> None:
    server.payload = offer_payload()
    daemon = start_daemon(tmp_path, bus, server, ab_image)
    try:
        assert status_fields(bus)["CURRENT_OP"] == "UPDATE_STATUS_IDLE"
        done = client(bus, "-update", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr + daemon.text()
        assert "Update succeeded -- reboot needed." in done.stdout + done.stderr
        fields = status_fields(bus)
        assert fields["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT"
        assert fields["NEW_VERSION"] == "2.0.0"
        assert int(fields["NEW_SIZE"]) == len(server.payload)
        assert server.seen[0].installsource == "ondemandupdate"
        assert slot_bytes(ab_image, USR_B, len(RELEASE)) == RELEASE
        assert gptprio.choose_boot(disk.read_table(str(ab_image)).slots).slot.number == USR_B
        assert (tmp_path / "run/marker").exists()
        # A restart keeps UPDATED_NEED_REBOOT (the marker), as update_engine does...
        assert stop(daemon) == 0
        daemon = start_daemon(tmp_path, bus, server, ab_image)
        assert status_fields(bus)["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT"
        # ...until -reset_status, which leaves the partition table as it is.
        assert client(bus, "-reset_status").returncode == 0
        assert status_fields(bus)["CURRENT_OP"] == "UPDATE_STATUS_IDLE"
        assert not (tmp_path / "run/marker").exists()
        assert gptprio.choose_boot(disk.read_table(str(ab_image)).slots).slot.number == USR_B
    finally:
        stop(daemon)


def test_nothing_to_update_ends_idle_and_the_daemon_stops_cleanly(
        tmp_path: Path, bus: str, server: OmahaServer, ab_image: Path) -> None:
    daemon = start_daemon(tmp_path, bus, server, ab_image)
    try:
        done = client(bus, "-update", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "No update available" in done.stdout + done.stderr
        assert server.kinds() == ["check"]
    finally:
        assert stop(daemon) == 0
    assert "Traceback" not in daemon.text()


def test_a_bad_config_is_named_and_the_daemon_exits(tmp_path: Path, bus: str) -> None:
    conf = tmp_path / "update.conf"
    conf.write_text("SERVER=http://127.0.0.1:9/\nCOREOS_RELEASE_VERSION=1.0.0\n"
                    "CHECK_INTERVAL=soon\n")
    done = subprocess.run([sys.executable, "-m", "flotilla.daemons.update.main",
                           "--config", str(conf), "--state-dir", str(tmp_path / "state"),
                           "--dbus", "none"], capture_output=True, text=True, timeout=60,
                          env={**_env(bus), "PATH": os.environ["PATH"]}, cwd=str(REPO))
    assert done.returncode == 1
    assert "CHECK_INTERVAL" in done.stderr and str(conf) in done.stderr
