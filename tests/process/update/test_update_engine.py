"""The update engine against a real Omaha server on 127.0.0.1 and a real GPT disk image.

Each test runs whole attempts: the XML the engine posts is parsed by the server, the
payload streams over HTTP (with ranges when it resumes) into USR-B of an sgdisk-made
image, and the outcome is read back from the image with our GPT reader and cgpt.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from flotilla.daemons.update import disk, engine, gptprio, omaha
from flotilla.daemons.update.codes import ErrorCode, Status
from flotilla.daemons.update.config import load
from flotilla.daemons.update.engine_io import OmahaHttp, Prefs, UsrDisk

from tests.process.raft.harness import make_ca_and_cert
from tests.unit.update.test_update_payload import build, image, key

from .omaha_server import OmahaServer

MiB = 1 << 20
BLOCK = 4096
USR_A, USR_B = 3, 4


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def ab_image(tmp_path: Path) -> Path:
    for tool in ("sgdisk", "cgpt"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: tests/setup.sh installs it (gdisk, cgpt)")
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(48 * MiB)
    run("sgdisk", "-o",
        "-n", "3:2048:+16M", "-t", f"3:{gptprio.USR_TYPE_GUID}", "-c", "3:USR-A",
        "-u", f"3:{gptprio.USR_A_UUID}",
        "-n", "4:0:+16M", "-t", f"4:{gptprio.USR_TYPE_GUID}", "-c", "4:USR-B",
        "-u", f"4:{gptprio.USR_B_UUID}", str(path))
    slots = gptprio.mark_good(disk.read_table(str(path)).slots, USR_A)
    disk.set_attributes(str(path), {s.number: s.attributes for s in slots if s.is_usr})
    return path


@pytest.fixture
def server():
    with OmahaServer() as omaha_server:
        yield omaha_server


def new_engine(tmp_path: Path, server: OmahaServer, ab_image: Path, *,
               signer: str = "release", read_timeout: float = 10) -> engine.UpdateEngine:
    config = load([("update.conf", f"SERVER={server.url}/v1/update/\nGROUP=stable\n"
                                   "COREOS_RELEASE_VERSION=1.0.0\nCHECK_INITIAL_DELAY=0s\n")])
    prefs = Prefs(tmp_path / "prefs")
    prefs.directory.mkdir(exist_ok=True)
    info = omaha.ClientInfo(version="1.0.0", track="stable", machine_id="ab" * 16,
                            boot_id="{4f1a1e0c-0000-4000-8000-000000000001}")
    return engine.UpdateEngine(
        config, prefs=prefs, disk=UsrDisk(str(ab_image)), booted_slot=USR_A,
        http=OmahaHttp(request_timeout=10, read_timeout=read_timeout), info=info,
        public_key=key(signer).public_key(), marker=tmp_path / "marker",
        reboot_required=tmp_path / "reboot-required")


async def attempt(eng: engine.UpdateEngine, statuses: list[str] | None = None) -> None:
    if statuses is not None:
        eng.subscribe(lambda snap: statuses.append(snap.current_operation))
    try:
        await asyncio.wait_for(eng.check(), 60)
    finally:
        await eng.http.close()


def slot_bytes(path: Path, number: int, length: int) -> bytes:
    offset, _ = disk.read_table(str(path)).extent(number)
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def cgpt(path: Path, number: int) -> gptprio.Flags:
    def field(flag: str) -> int:
        return int(run("cgpt", "show", "-i", str(number), flag, str(path)).strip(), 0)
    return gptprio.Flags(priority=field("-P"), tries=field("-T"), successful=bool(field("-S")))


RELEASE = image(size=3 * MiB + 5, seed=7)
#: payload bytes one operation can span (32 blocks, stored raw when xz does not help)
OPERATION_SPAN = 32 * BLOCK + 4096


def offer_payload(signer: str = "release") -> bytes:
    return build(RELEASE, signer=key(signer), chunk=32 * BLOCK)


def test_no_update_returns_to_idle_and_says_so(tmp_path: Path, server: OmahaServer,
                                               ab_image: Path) -> None:
    eng = new_engine(tmp_path, server, ab_image)
    statuses: list[str] = []
    asyncio.run(attempt(eng, statuses))
    assert statuses == [Status.CHECKING_FOR_UPDATE.value, Status.IDLE.value]
    assert server.kinds() == ["check"]
    assert server.seen[0].previous_version == "0.0.0.0"
    assert server.seen[0].installsource == "scheduler"
    assert eng.details()["last_answer"] == "no update available"
    assert not (tmp_path / "marker").exists()


def test_an_update_is_written_verified_and_made_the_next_boot(
        tmp_path: Path, server: OmahaServer, ab_image: Path) -> None:
    server.payload = offer_payload()
    eng = new_engine(tmp_path, server, ab_image)
    statuses: list[str] = []
    asyncio.run(attempt(eng, statuses))
    assert [s for i, s in enumerate(statuses) if s not in statuses[:i]] == [
        Status.CHECKING_FOR_UPDATE.value, Status.UPDATE_AVAILABLE.value,
        Status.DOWNLOADING.value, Status.FINALIZING.value, Status.UPDATED_NEED_REBOOT.value]
    assert slot_bytes(ab_image, USR_B, len(RELEASE)) == RELEASE
    assert server.events() == [(13, 1, 0), (14, 1, 0), (3, 1, 0)]
    assert cgpt(ab_image, USR_B) == gptprio.Flags(priority=2, tries=1, successful=False)
    assert cgpt(ab_image, USR_A) == gptprio.Flags(priority=1, tries=0, successful=True)
    assert gptprio.choose_boot(disk.read_table(str(ab_image)).slots).slot.number == USR_B
    assert (tmp_path / "marker").exists() and (tmp_path / "reboot-required").exists()
    snap = eng.snapshot()
    assert (snap.current_operation, snap.new_version, snap.new_size, snap.progress) == (
        Status.UPDATED_NEED_REBOOT.value, "2.0.0", len(server.payload), 1.0)
    assert "2.0.0 is installed in USR-B" in eng.details()["reboot_explanation"]
    assert eng.prefs.get_text(engine.PREF_PREVIOUS_VERSION) == "1.0.0"
    # Waiting for the reboot, the next check only pings.
    asyncio.run(attempt(eng))
    assert server.kinds()[-1] == "ping"


def test_server_errors_back_off_and_change_nothing(tmp_path: Path, server: OmahaServer,
                                                   ab_image: Path) -> None:
    server.check_status = 503
    before = ab_image.read_bytes()
    eng = new_engine(tmp_path, server, ab_image)

    async def twice() -> list[float]:
        try:
            first = await eng.check()
            second = await eng.check()
            return [first.interval, second.interval, first.reason]  # type: ignore[list-item]
        finally:
            await eng.http.close()

    first, second, reason = asyncio.run(twice())
    assert reason == "back-off after HTTP 503"
    assert second == 2 * first
    assert eng.snapshot().current_operation == Status.IDLE.value
    assert server.kinds() == ["check", "check"] and server.events() == []
    assert "503" in eng.details()["last_error"]
    assert ab_image.read_bytes() == before


def test_a_broken_download_continues_from_the_last_synced_operation(
        tmp_path: Path, server: OmahaServer, ab_image: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CHECKPOINT_BYTES", 256 * 1024)
    server.payload = offer_payload()
    cut = len(server.payload) // 2 + 1234
    server.stall_after = [cut]
    eng = new_engine(tmp_path, server, ab_image, read_timeout=1.0)
    asyncio.run(attempt(eng))
    assert eng.snapshot().current_operation == Status.UPDATED_NEED_REBOOT.value
    assert len(server.ranges) == 2 and server.ranges[0] == 0
    assert cut - OPERATION_SPAN <= server.ranges[1] <= cut  # the last whole operation
    assert slot_bytes(ab_image, USR_B, len(RELEASE)) == RELEASE
    assert eng.prefs.get(engine.PREF_RESUME) is None


def test_a_download_cut_off_resumes_after_a_restart(
        tmp_path: Path, server: OmahaServer, ab_image: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CHECKPOINT_BYTES", 256 * 1024)
    server.payload = offer_payload()
    server.max_failures = 1
    cut = 2 * len(server.payload) // 3
    server.stall_after = [cut]
    first = new_engine(tmp_path, server, ab_image, read_timeout=1.0)
    asyncio.run(attempt(first))
    assert first.snapshot().current_operation == Status.IDLE.value
    assert server.events() == [(13, 1, 0), (3, 0, ErrorCode.DOWNLOAD_TRANSFER_ERROR)]
    assert first.prefs.get(engine.PREF_RESUME) is not None
    assert cgpt(ab_image, USR_B).priority == 0  # nothing bootable yet
    second = new_engine(tmp_path, server, ab_image)  # the daemon restarted
    asyncio.run(attempt(second))
    assert second.snapshot().current_operation == Status.UPDATED_NEED_REBOOT.value
    assert server.ranges[0] == 0 and cut - OPERATION_SPAN <= server.ranges[1] <= cut
    assert slot_bytes(ab_image, USR_B, len(RELEASE)) == RELEASE


def test_a_payload_signed_by_another_key_never_becomes_bootable(
        tmp_path: Path, server: OmahaServer, ab_image: Path) -> None:
    server.payload = offer_payload(signer="stranger")
    table_before = disk.read_table(str(ab_image))
    eng = new_engine(tmp_path, server, ab_image)
    asyncio.run(attempt(eng))
    assert eng.snapshot().current_operation == Status.IDLE.value
    assert server.events()[-1] == (3, 0, ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR)
    assert disk.read_table(str(ab_image)).slots == table_before.slots
    assert not (tmp_path / "marker").exists()
    assert "signature" in eng.details()["last_error"]


def test_without_a_payload_key_nothing_is_downloaded(
        tmp_path: Path, server: OmahaServer, ab_image: Path) -> None:
    server.payload = offer_payload()
    eng = new_engine(tmp_path, server, ab_image)
    eng.public_key = None
    asyncio.run(attempt(eng))
    assert server.ranges == []
    assert server.events() == [(3, 0, ErrorCode.DOWNLOAD_PAYLOAD_PUBKEY_VERIFICATION_ERROR)]
    assert cgpt(ab_image, USR_B).priority == 0


def test_the_running_slot_is_marked_good_once_healthy(
        tmp_path: Path, server: OmahaServer, ab_image: Path) -> None:
    slots = gptprio.after_install(disk.read_table(str(ab_image)).slots, USR_B)
    disk.set_attributes(str(ab_image), {s.number: s.attributes for s in slots if s.is_usr})
    eng = new_engine(tmp_path, server, ab_image)
    eng.booted_slot = USR_B
    eng.config = eng.config.__class__(**{**eng.config.__dict__, "mark_good_delay": 0.0,
                                         "health_check_units": ("app.service",)})
    healthy = asyncio.Event()

    async def unit_active(name: str) -> bool:
        assert name == "app.service"
        return healthy.is_set()

    eng.unit_active = unit_active  # type: ignore[assignment]

    async def scenario() -> tuple[str, gptprio.Flags]:
        task = asyncio.create_task(eng.mark_good_when_healthy(poll=0.05))
        while "waiting for app.service" not in eng.marked_good:
            await asyncio.sleep(0.02)
        waiting = cgpt(ab_image, USR_B)
        healthy.set()
        await asyncio.wait_for(task, 10)
        return waiting.__repr__(), cgpt(ab_image, USR_B)

    waiting, good = asyncio.run(scenario())
    assert "successful=False" in waiting
    assert good == gptprio.Flags(priority=2, tries=0, successful=True)
    assert eng.marked_good == "USR-B is marked good"


def tls_server(tmp_path: Path, **kwargs: object) -> OmahaServer:
    """An Omaha server on https://127.0.0.1 with a certificate from a CA of the test's own."""
    make_ca_and_cert(tmp_path, "omaha", san_ip="127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "omaha.pem", tmp_path / "omaha.key")
    return OmahaServer(tls=context, **kwargs)  # type: ignore[arg-type]


def test_a_self_hosted_server_with_its_own_ca_and_download_credentials(
        tmp_path: Path, ab_image: Path) -> None:
    """SERVER_CA_FILE trusts the server's CA; DOWNLOAD_USER/PASSWORD go with the payload."""
    with tls_server(tmp_path, download_auth="fleet:s3cret") as server:
        server.payload = offer_payload()
        eng = new_engine(tmp_path, server, ab_image)
        eng.http = OmahaHttp(ca_file=str(tmp_path / "omaha-ca.pem"), user="fleet",
                             password="s3cret", request_timeout=10, read_timeout=10)
        asyncio.run(attempt(eng))
        assert eng.snapshot().current_operation == Status.UPDATED_NEED_REBOOT.value
        assert slot_bytes(ab_image, USR_B, len(RELEASE)) == RELEASE


def test_an_untrusted_certificate_is_refused(tmp_path: Path, ab_image: Path) -> None:
    with tls_server(tmp_path) as server:
        server.payload = offer_payload()
        eng = new_engine(tmp_path, server, ab_image)  # the system's CAs only
        asyncio.run(attempt(eng))
        assert server.kinds() == []  # the TLS handshake failed before any request
        assert eng.snapshot().current_operation == Status.IDLE.value
        assert "certificate" in eng.details()["last_error"].lower()


def test_wrong_download_credentials_fail_the_attempt_with_the_http_code(
        tmp_path: Path, ab_image: Path) -> None:
    with tls_server(tmp_path, download_auth="fleet:s3cret") as server:
        server.payload = offer_payload()
        server.max_failures = 1
        eng = new_engine(tmp_path, server, ab_image)
        eng.http = OmahaHttp(ca_file=str(tmp_path / "omaha-ca.pem"), user="fleet",
                             password="wrong", request_timeout=10, read_timeout=10)
        asyncio.run(attempt(eng))
        assert server.events()[-1] == (3, 0, 2000 + 401)
        assert cgpt(ab_image, USR_B).priority == 0
