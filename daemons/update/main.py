"""``update_engine``: the daemon behind ``update-engine.service``.

Reads update.conf the way update_engine does (first file that sets a key wins), finds the
A/B disk and the running slot, loads the payload key, serves ``com.coreos.update1`` on the
system bus and runs the check loop and the mark-good task until SIGTERM. update_engine's
own flags (``-foreground``, ``-logtostderr``) are accepted so its unit lines keep working;
the rest exist so an operator (or a test) can point the daemon at other files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import journal, service
from . import attempter, omaha
from .config import CONFIG_FILES, OEM_FILES, ConfigError, UpdateConfig, load
from .dbus_service import start_dbus_service
from .engine import UpdateEngine
from .engine_io import OmahaHttp, Prefs, UsrDisk, candidate_disks, find_usr_disk, read_cmdline
from .status import COMPLETED_MARKER

log = logging.getLogger("update_engine")

DEFAULT_STATE_DIR = "/var/lib/update_engine"
DEFAULT_PUBLIC_KEY = "/usr/share/update_engine/update-payload-key.pub.pem"
REBOOT_REQUIRED = "/run/reboot-required"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="update_engine", description="Flotilla's A/B update engine (com.coreos.update1)")
    parser.add_argument("-foreground", "--foreground", action="store_true",
                        help="accepted for update_engine's unit; the daemon never forks")
    parser.add_argument("-logtostderr", "--logtostderr", action="store_true",
                        help="log to stderr even when the journal is there")
    parser.add_argument("--config", action="append", metavar="FILE",
                        help="an update.conf-style file, first wins (repeat; default: "
                             + ", ".join(CONFIG_FILES) + ")")
    parser.add_argument("--oem-release", action="append", metavar="FILE",
                        help="OEM release file (default: " + ", ".join(OEM_FILES) + ")")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="where prefs and the resume record live (default %(default)s)")
    parser.add_argument("--public-key", default=DEFAULT_PUBLIC_KEY,
                        help="PEM RSA key payloads must be signed with (default %(default)s)")
    parser.add_argument("--marker", default=COMPLETED_MARKER,
                        help="file that says an update waits for its reboot")
    parser.add_argument("--reboot-required", default=REBOOT_REQUIRED,
                        help="file created for tools that look for a pending reboot")
    parser.add_argument("--dbus", choices=("system", "auto", "none"), default="system",
                        help="serve com.coreos.update1 on the system bus (default), only "
                             "when there is one (auto), or not at all (none)")
    parser.add_argument("--machine-id-file", default="/etc/machine-id", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _read_files(paths: Sequence[str]) -> list[tuple[str, str]]:
    found = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            found.append((path, Path(path).read_text("utf-8", "replace")))
    return found


def load_public_key(path: str) -> rsa.RSAPublicKey | None:
    """The payload key, or None (logged): without it no payload is ever applied."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        log.error("no payload key at %s: updates will be refused", path)
        return None
    except ValueError as err:
        log.error("payload key %s is not a PEM public key (%s): updates will be refused",
                  path, err)
        return None
    if not isinstance(key, rsa.RSAPublicKey):
        log.error("payload key %s is not an RSA key: updates will be refused", path)
        return None
    return key


def _partition_number(device: str, sys_class: Path = Path("/sys/class/block")) -> str:
    """``/dev/sda3`` → ``3``, from sysfs (names alone lie: nvme0n1p3, loop7p3, mmcblk0p3)."""
    try:
        return (sys_class / Path(os.path.realpath(device)).name / "partition").read_text().strip()
    except OSError:
        return ""


def find_disk(config: UpdateConfig, cmdline: str) -> tuple[UsrDisk | None, int | None]:
    """The A/B disk and the running slot's number, or (None, None) with the reason logged."""
    spec = attempter.parse_usr_spec(config.booted_usr) if config.booted_usr else None
    if config.booted_usr and spec is None:
        log.error("BOOTED_USR=%s names no partition (PARTUUID=, PARTLABEL=, a number or a "
                  "device)", config.booted_usr)
        return None, None
    spec = spec or attempter.usr_from_cmdline(cmdline)
    if spec is None:
        log.warning("the running /usr is unknown (no mount.usr= or usr= on the command line "
                    "and no BOOTED_USR): updates cannot be applied")
        return None, None
    if spec.kind == "device":
        number = _partition_number(spec.value)
        if not number:
            log.error("%s is not a partition", spec.value)
            return None, None
        spec = attempter.UsrSpec("number", number)
    path = config.usr_device
    if not path and spec.kind == "partuuid":
        path = find_usr_disk(spec.value, candidate_disks()) or ""
    if not path:
        log.warning("no disk found with the running /usr (%s): set USR_DEVICE", spec)
        return None, None
    usr_disk = UsrDisk(path)
    try:
        booted = attempter.find_booted(usr_disk.slots(), spec)
    except (OSError, ValueError) as err:
        log.error("disk %s: %s", path, err)
        return None, None
    log.info("running /usr is %s (partition %d of %s)", booted.label or spec, booted.number,
             path)
    return usr_disk, booted.number


def client_info(config: UpdateConfig, prefs: Prefs, machine_id_file: str) -> omaha.ClientInfo:
    try:
        machine_id = Path(machine_id_file).read_text().strip()
    except OSError:
        machine_id = ""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = str(uuid.uuid4())
    aleph = prefs.get_text("aleph-version")
    if not aleph:  # the first version this machine ran, kept for the server's reports
        aleph = config.version
        prefs.set("aleph-version", aleph)
    return omaha.ClientInfo(version=config.version, track=config.group, machine_id=machine_id,
                            boot_id="{" + boot_id + "}", board=config.board,
                            app_id=config.app_id, oem=config.oem,
                            oem_version=config.oem_version, aleph_version=aleph,
                            machine_alias=config.machine_alias)


async def _unit_active_checker() -> tuple[Any, Any]:
    """A health check through systemd over D-Bus; None when there is no systemd to ask."""
    from ..systemd.manager import Systemd

    try:
        systemd = await Systemd.connect()
    except Exception as err:  # no system bus: health units cannot be confirmed
        log.warning("systemd is not reachable (%s): health units count as inactive", err)
        return None, None

    async def active(name: str) -> bool:
        try:
            return (await systemd.unit_status(name)).is_active
        except Exception:
            return False
    return active, systemd


async def serve(args: argparse.Namespace, supervisor: service.Service) -> int:
    try:
        config = load(_read_files(args.config or CONFIG_FILES),
                      _read_files(args.oem_release or OEM_FILES))
    except ConfigError as err:
        log.error("configuration: %s", err)
        return 1
    prefs = Prefs(Path(args.state_dir) / "prefs")
    prefs.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    usr_disk, booted = find_disk(config, read_cmdline())
    http = OmahaHttp(ca_file=config.server_ca_file, user=config.download_user,
                     password=config.download_password)
    active, systemd = (await _unit_active_checker() if config.health_check_units
                       else (None, None))
    engine = UpdateEngine(config, prefs=prefs, disk=usr_disk, booted_slot=booted, http=http,
                          info=client_info(config, prefs, args.machine_id_file),
                          public_key=load_public_key(args.public_key),
                          marker=Path(args.marker), reboot_required=Path(args.reboot_required),
                          unit_active=active)
    bus = start_dbus_service(engine, args.dbus)
    if bus is not None:
        try:
            await asyncio.wait_for(bus.owns_name.wait(), 30)
        except TimeoutError:
            log.error("could not own com.coreos.update1 on the system bus within 30 s")
            await bus.close()
            return 1
    engine.announce()
    checks = asyncio.create_task(engine.run(), name="checks")
    mark_good = asyncio.create_task(engine.mark_good_when_healthy(), name="mark-good")
    supervisor.ready(f"{config.version}, server {config.server or 'disabled'}")
    stopping = asyncio.create_task(supervisor.stopping.wait())
    try:
        await asyncio.wait([stopping, checks], return_when=asyncio.FIRST_COMPLETED)
        if checks.done() and checks.exception() is not None:
            log.error("the check loop failed", exc_info=checks.exception())
            return 1
        return 0
    finally:
        for task in (stopping, checks, mark_good):
            task.cancel()
        results = await asyncio.gather(stopping, checks, mark_good, return_exceptions=True)
        if isinstance(results[2], Exception):
            log.error("marking the running /usr good failed", exc_info=results[2])
        if bus is not None:
            await bus.close()
        await http.close()
        if systemd is not None:
            await systemd.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.logtostderr:
        os.environ.pop("JOURNAL_STREAM", None)  # stderr, even when it is the journal's
    journal.setup("update_engine")
    return service.run("update_engine", lambda supervisor: serve(args, supervisor))


if __name__ == "__main__":
    sys.exit(main())
