"""update_engine_client against the real D-Bus service (fake engine) on a private bus.

Output is compared byte for byte with update_engine_client's format, sourced by a shell
to prove it is shell, and each action's exit code is the one upstream gives; a
non-root user reads the status but is told why it cannot start an update; without the
service or the bus the command says so and fails.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conditions import wait_until
from tests.process.kv_dbus.bus import PrivateBus
from tests.process.update.harness import (
    NOBODY,
    Engine,
    client,
    name_owner,
    start_client,
    start_engine,
    stop,
)

IDLE_STATUS = ("LAST_CHECKED_TIME=0\nPROGRESS=0.000000\nCURRENT_OP=UPDATE_STATUS_IDLE\n"
               "NEW_VERSION=0.0.0\nNEW_SIZE=0\n")


def test_status_prints_upstreams_five_lines_with_one_or_two_dashes(engine: Engine,
                                                                   bus: PrivateBus) -> None:
    for flag in ("-status", "--status", "-status=true"):
        done = client(bus.address, flag)
        assert (done.returncode, done.stdout) == (0, IDLE_STATUS), done.stderr
    assert engine.calls("details") == 3


def test_status_adds_details_and_the_reboot_explanation_as_shell(engine: Engine,
                                                                 bus: PrivateBus) -> None:
    engine.send(attempt="update",
                details={"next_check_time": "1700002800",
                         "last_answer": "update to 3815.2.0 offered",
                         "reboot_explanation": "version 3815.2.0 is installed in USR-B; "
                                               "it's waiting for a reboot"})
    assert client(bus.address, "-check_for_update").returncode == 0
    wait_until(lambda: "UPDATED_NEED_REBOOT" in client(bus.address, "-status").stdout, 10,
               "the scripted update to finish")
    done = client(bus.address, "-status")
    assert done.returncode == 0
    assert done.stdout == (
        "LAST_CHECKED_TIME=1700000123\nPROGRESS=1.000000\n"
        "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT\nNEW_VERSION=3815.2.0\n"
        "NEW_SIZE=314572800\nNEXT_CHECK_TIME=1700002800\n"
        "LAST_ANSWER='update to 3815.2.0 offered'\n"
        "REBOOT_EXPLANATION='version 3815.2.0 is installed in USR-B; it'\"'\"'s waiting "
        "for a reboot'\n")
    sourced = subprocess.run(
        ["bash", "-c", 'set -eu; . /dev/stdin; printf "%s|%s|%s|%s" "$CURRENT_OP" '
                       '"$NEW_SIZE" "$LAST_ANSWER" "$REBOOT_EXPLANATION"'],
        input=done.stdout, capture_output=True, text=True, timeout=20)
    assert sourced.returncode == 0, sourced.stderr
    assert sourced.stdout == ("UPDATE_STATUS_UPDATED_NEED_REBOOT|314572800|update to "
                              "3815.2.0 offered|version 3815.2.0 is installed in USR-B; "
                              "it's waiting for a reboot")


def test_a_hostile_version_string_is_quoted_so_sourcing_runs_nothing(
        engine: Engine, bus: PrivateBus, workdir: Path) -> None:
    canary = workdir / "pwned"
    engine.send(offered=[f"1.0;touch {canary}", 1])
    done = client(bus.address, "-status")
    assert f"NEW_VERSION='1.0;touch {canary}'\n" in done.stdout
    sourced = subprocess.run(["sh", "-c", '. /dev/stdin; printf %s "$NEW_VERSION"'],
                             input=done.stdout, capture_output=True, text=True, timeout=20)
    assert sourced.stdout == f"1.0;touch {canary}" and not canary.exists()


@pytest.mark.parametrize(("behaviour", "code", "said"), [
    ("update", 0, "Update succeeded -- reboot needed."),
    ("noupdate", 0, "No update available"),
    ("fail", 1, "Update failed."),
])
def test_update_waits_for_the_outcome_and_exits_as_upstream(
        engine: Engine, bus: PrivateBus, behaviour: str, code: int, said: str) -> None:
    engine.send(attempt=behaviour)
    started = time.monotonic()
    done = client(bus.address, "--update")
    took = time.monotonic() - started
    assert done.returncode == code, done.stderr
    assert said in done.stderr
    assert engine.calls("attempt_update") == 1
    assert took < 4.5, f"the signal should end the wait before the first 5 s poll ({took:.1f}s)"
    last = done.stdout.rsplit("LAST_CHECKED_TIME=", 1)[-1]
    want = "UPDATE_STATUS_UPDATED_NEED_REBOOT" if behaviour == "update" else "UPDATE_STATUS_IDLE"
    assert f"\nCURRENT_OP={want}\n" in last, done.stdout


def test_update_that_nothing_happens_to_ends_idle_at_the_first_poll(engine: Engine,
                                                                    bus: PrivateBus) -> None:
    engine.send(attempt="none")
    started = time.monotonic()
    done = client(bus.address, "-update")
    took = time.monotonic() - started
    assert done.returncode == 0 and "No update available" in done.stderr
    assert done.stdout == IDLE_STATUS  # the status printed at the poll, as upstream does
    assert 4.5 <= took < 15, took


def test_update_when_already_updated_succeeds_at_once(engine: Engine, bus: PrivateBus) -> None:
    engine.send(attempt="update")
    assert client(bus.address, "-check_for_update").returncode == 0
    wait_until(lambda: "NEED_REBOOT" in client(bus.address, "-status").stdout, 10,
               "the update to finish")
    started = time.monotonic()
    done = client(bus.address, "-update")
    assert done.returncode == 0 and "reboot needed" in done.stderr
    assert time.monotonic() - started < 4.5


def test_update_fails_when_the_engine_leaves_the_bus_while_it_waits(engine: Engine,
                                                                     bus: PrivateBus) -> None:
    engine.send(attempt="none")
    waiting = start_client(bus.address, "-update")
    try:
        assert waiting.stderr is not None
        assert "Initiating" in waiting.stderr.readline()
        assert "Waiting for update to complete." in waiting.stderr.readline()
        engine.stop()
        _, err = waiting.communicate(timeout=20)
    finally:
        stop(waiting)
    assert waiting.returncode == 1
    assert "com.coreos.update1 left the bus while the update ran" in err


def test_watch_for_updates_prints_every_status_update(engine: Engine, bus: PrivateBus) -> None:
    watcher = start_client(bus.address, "-watch_for_updates")
    try:
        assert watcher.stderr is not None and watcher.stdout is not None
        line = watcher.stderr.readline()
        assert "Watching for status updates." in line, line
        engine.send(goto=["UPDATE_STATUS_CHECKING_FOR_UPDATE", "UPDATE_STATUS_UPDATE_AVAILABLE",
                          "UPDATE_STATUS_DOWNLOADING"], progress=[157286400, 314572800])
        lines = [watcher.stdout.readline() for _ in range(6 * 6)]
    finally:
        stop(watcher)
    assert watcher.returncode == 0  # SIGTERM ends the watch cleanly
    blocks = "".join(lines).split("Got status update:\n")[1:]
    assert blocks[0] == ("  last_checked_time: 0\n  progress: 0\n"
                         "  current_operation: UPDATE_STATUS_CHECKING_FOR_UPDATE\n"
                         "  new_version: 0.0.0\n  new_size: 0\n")
    assert [b.split("current_operation: ")[1].split("\n")[0] for b in blocks] == [
        "UPDATE_STATUS_CHECKING_FOR_UPDATE", "UPDATE_STATUS_UPDATE_AVAILABLE",
        "UPDATE_STATUS_DOWNLOADING", "UPDATE_STATUS_DOWNLOADING",
        "UPDATE_STATUS_DOWNLOADING", "UPDATE_STATUS_DOWNLOADING"]
    assert "  progress: 0.5\n" in blocks[-1]
    assert "  last_checked_time: 1700000123\n" in blocks[-1]


def test_watch_keeps_receiving_after_the_engine_restarts(bus: PrivateBus,
                                                         workdir: Path) -> None:
    first = start_engine(bus.address, workdir)
    watcher = start_client(bus.address, "-watch_for_updates")
    try:
        assert watcher.stderr is not None and watcher.stdout is not None
        assert "Watching" in watcher.stderr.readline()
        first.stop()
        wait_until(lambda: not name_owner(bus.address), 10, "the first engine to leave")
        second = start_engine(bus.address, workdir)
        try:
            head = [watcher.stdout.readline() for _ in range(6)]  # the startup broadcast
            assert head[0] == "Got status update:\n"
            assert head[3] == "  current_operation: UPDATE_STATUS_IDLE\n"
        finally:
            second.stop()
    finally:
        stop(watcher)


def test_reset_status_succeeds_with_a_hint_and_is_refused_with_one(engine: Engine,
                                                                   bus: PrivateBus) -> None:
    engine.send(goto=["UPDATE_STATUS_CHECKING_FOR_UPDATE"])
    refused = client(bus.address, "-reset_status")
    assert refused.returncode == 1
    assert "Reset not allowed in this state." in refused.stderr
    assert "update-engine is in UPDATE_STATUS_CHECKING_FOR_UPDATE" in refused.stderr
    assert "-watch_for_updates" in refused.stderr
    engine.send(goto=["UPDATE_STATUS_UPDATE_AVAILABLE", "UPDATE_STATUS_DOWNLOADING",
                      "UPDATE_STATUS_FINALIZING", "UPDATE_STATUS_UPDATED_NEED_REBOOT"])
    done = client(bus.address, "--reset_status")
    assert done.returncode == 0, done.stderr
    assert "ResetStatus succeeded" in done.stderr and "cgpt prioritize" in done.stderr
    assert "CURRENT_OP=UPDATE_STATUS_IDLE" in client(bus.address, "-status").stdout
    again = client(bus.address, "-reset_status")  # from IDLE: a no-op, said as one
    assert again.returncode == 0
    assert "already UPDATE_STATUS_IDLE, nothing changed" in again.stderr
    assert "cgpt" not in again.stderr


def test_a_non_root_user_reads_status_but_is_refused_changes(engine: Engine,
                                                             bus: PrivateBus) -> None:
    status = client(bus.address, "-status", uid=NOBODY)
    assert (status.returncode, status.stdout) == (0, IDLE_STATUS), status.stderr
    for flag in ("-check_for_update", "-update", "-reset_status"):
        refused = client(bus.address, flag, uid=NOBODY)
        assert refused.returncode == 1, (flag, refused.stderr)
        assert "refused by the bus policy: only root may call it" in refused.stderr, flag
    assert engine.calls("attempt_update") == 0 and engine.calls("reset_status") == 0


def test_without_the_service_or_the_bus_the_client_says_so(bus: PrivateBus,
                                                           workdir: Path) -> None:
    for flag in ("-status", "-check_for_update", "-update", "-reset_status",
                 "-watch_for_updates"):
        done = client(bus.address, flag, timeout=20)
        assert done.returncode == 1, (flag, done.stdout, done.stderr)
        assert "com.coreos.update1 is not on the system bus" in done.stderr, (flag, done.stderr)
        assert "Traceback" not in done.stderr
    gone = client(f"unix:path={workdir}/no-such-socket", "-status", timeout=20)
    assert gone.returncode == 1 and "cannot connect to the system bus" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_flags_follow_gflags(bus: PrivateBus) -> None:
    nothing = client(bus.address, "-status=false", "--nowatch_for_updates")
    assert (nothing.returncode, nothing.stdout) == (0, "")
    unknown = client(bus.address, "-frobnicate")
    assert unknown.returncode == 1
    assert unknown.stderr == "ERROR: unknown command line flag 'frobnicate'\n"
