"""update_engine_client's pure parts: gflags reading, output bytes, the -update decision,
and the D-Bus service's typed bodies and method lookup."""

from __future__ import annotations

import subprocess

import pytest
from flotilla.daemons.update import client as C
from flotilla.daemons.update import dbus_service as S
from flotilla.daemons.update.codes import Status
from flotilla.daemons.update.status import Snapshot

IDLE = Snapshot(0, 0.0, Status.IDLE.value, "0.0.0", 0)
REBOOT = Snapshot(1_700_000_123, 1.0, Status.UPDATED_NEED_REBOOT.value, "3815.2.0",
                  314_572_800)


# ----------------------------------------------------------------- flags


@pytest.mark.parametrize("argv", [["-status"], ["--status"], ["-status=true"],
                                  ["--status=1"], ["-status=yes"], ["-status=t"]])
def test_a_flag_is_read_with_one_or_two_dashes_and_gflags_true_values(argv: list[str]) -> None:
    assert C.parse_args(argv).action == "status"


@pytest.mark.parametrize("argv", [[], ["-status=false"], ["-nostatus"], ["--nostatus"],
                                  ["-status", "-nostatus"], ["-status", "--status=0"],
                                  ["positional", "words"], ["--", "-status"]])
def test_no_action_runs_when_none_is_left_set(argv: list[str]) -> None:
    assert C.parse_args(argv).action is None


def test_upstreams_precedence_picks_the_action() -> None:
    everything = ["-watch_for_updates", "-update", "-check_for_update", "-status",
                  "-reset_status"]
    order = ["reset_status", "status", "check_for_update", "update", "watch_for_updates"]
    for first in order:
        flags = [f for f in everything if f.lstrip("-") in order[order.index(first):]]
        assert C.parse_args(flags).action == first
    assert C.parse_args(["-nostatus", "-status"]).action == "status"  # the last word wins


def test_glog_flags_are_accepted_and_ignored() -> None:
    parsed = C.parse_args(["-logtostderr", "-v", "2", "--minloglevel=1", "-update"])
    assert parsed.action == "update" and parsed.flags == frozenset({"update"})
    with pytest.raises(C.UsageError, match="missing its argument"):
        C.parse_args(["-v"])


@pytest.mark.parametrize(("argv", "message"), [
    (["-frobnicate"], "ERROR: unknown command line flag 'frobnicate'"),
    (["--nofrob"], "ERROR: unknown command line flag 'nofrob'"),
    (["-status=maybe"], "ERROR: illegal value 'maybe' specified for bool flag 'status'"),
    (["-nostatus=true"], "ERROR: boolean value (true) specified for bool flag 'status' "
                         "via --nostatus"),
])
def test_bad_flags_get_gflags_words(argv: list[str], message: str) -> None:
    with pytest.raises(C.UsageError) as caught:
        C.parse_args(argv)
    assert str(caught.value) == message


def test_help_is_recognised_and_lists_every_action() -> None:
    assert C.parse_args(["--help"]).help and C.parse_args(["-h"]).help
    text = C.usage()
    for name in C.ACTIONS:
        assert f"  -{name}: " in text


def test_main_answers_usage_errors_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert C.main(["-frobnicate"]) == 1
    assert capsys.readouterr().err == "ERROR: unknown command line flag 'frobnicate'\n"
    assert C.main([]) == 0
    assert C.main(["-help"]) == 0 and "-watch_for_updates" in capsys.readouterr().out


# ----------------------------------------------------------------- output


def test_status_is_upstreams_printf_layout() -> None:
    assert C.format_status(IDLE) == ("LAST_CHECKED_TIME=0\nPROGRESS=0.000000\n"
                                     "CURRENT_OP=UPDATE_STATUS_IDLE\nNEW_VERSION=0.0.0\n"
                                     "NEW_SIZE=0\n")
    half = Snapshot(5, 0.123456789, Status.DOWNLOADING.value, "1.2.3", 99)
    assert "\nPROGRESS=0.123457\n" in C.format_status(half)  # %f: six decimals, rounded


def test_details_come_in_a_fixed_order_quoted_and_unknown_keys_are_prefixed() -> None:
    text = C.format_status(IDLE, {"zeta": "z z", "last_answer": "no update available",
                                  "next_check_time": "1700002800", "PATH": "/evil",
                                  "empty": "", "version": "3510.2.0", "last_error": "",
                                  "next_check_reason": "periodic check"})
    assert text.splitlines()[5:] == ["NEXT_CHECK_TIME=1700002800",
                                     "NEXT_CHECK_REASON='periodic check'",
                                     "LAST_ANSWER='no update available'",
                                     "UPDATE_ENGINE_VERSION=3510.2.0",
                                     "UPDATE_ENGINE_ZETA='z z'"]


def test_a_pending_reboot_is_always_explained() -> None:
    text = C.format_status(REBOOT)
    (line,) = [x for x in text.splitlines() if x.startswith("REBOOT_EXPLANATION=")]
    assert "3815.2.0" in line and "-reset_status" in line
    given = C.format_status(REBOOT, {"reboot_explanation": "ours"})
    assert given.endswith("REBOOT_EXPLANATION=ours\n")


@pytest.mark.parametrize("value", ["", "3815.2.0", "1.0;rm -rf /", "$(id)", "a'b", "`x`",
                                   "two words", "tab\there", "new\nline", "ünï"])
def test_every_value_sources_back_to_itself(value: str) -> None:
    snap = Snapshot(1, 0.5, Status.IDLE.value, value, 2)
    text = C.format_status(snap, {"last_answer": value})
    done = subprocess.run(["sh", "-c", '. /dev/stdin; printf "%s|%s" "$NEW_VERSION" '
                                       '"${LAST_ANSWER-unset}"'],
                          input=text, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{value}|{value if value else 'unset'}"


def test_plain_values_are_printed_bare_as_upstream_prints_them() -> None:
    assert C.shell_value("UPDATE_STATUS_IDLE") == "UPDATE_STATUS_IDLE"
    assert C.shell_value("3815.2.0+build-1") == "3815.2.0+build-1"
    assert C.shell_value("1;x") == "'1;x'"


def test_a_signal_is_worded_as_upstreams_watcher_logs_it() -> None:
    assert C.format_signal(Snapshot(7, 0.25, "UPDATE_STATUS_DOWNLOADING", "1.2.3", 10)) == (
        "Got status update:\n  last_checked_time: 7\n  progress: 0.25\n"
        "  current_operation: UPDATE_STATUS_DOWNLOADING\n  new_version: 1.2.3\n"
        "  new_size: 10\n")
    assert "  progress: 0\n" in C.format_signal(IDLE)
    assert "  progress: 1\n" in C.format_signal(REBOOT)


def test_status_bodies_must_be_xdssx() -> None:
    assert C.snapshot_from_body([1, 0.5, "a", "b", 2]) == Snapshot(1, 0.5, "a", "b", 2)
    for bad in ([1, 0.5, "a", "b"], [1, 1, "a", "b", 2], ["1", 0.5, "a", "b", 2]):
        with pytest.raises(ValueError):
            C.snapshot_from_body(bad)


# ----------------------------------------------------------------- -update's decision


def _run(ops: list[str], polled_at: int | None = None) -> tuple[int, str] | None:
    wait = C.UpdateWait()
    for i, op in enumerate(ops):
        if polled_at is not None and i >= polled_at:
            wait.polled = True
        outcome = wait.observe(op)
        if outcome is not None:
            assert i == len(ops) - 1, f"decided early at {op}"
            return outcome
    return None


def test_update_outcomes() -> None:
    s = Status
    assert _run([s.CHECKING_FOR_UPDATE.value, s.UPDATE_AVAILABLE.value, s.DOWNLOADING.value,
                 s.FINALIZING.value, s.UPDATED_NEED_REBOOT.value]) == (
        0, "Update succeeded -- reboot needed.")
    assert _run([s.UPDATED_NEED_REBOOT.value]) == (0, "Update succeeded -- reboot needed.")
    assert _run([s.CHECKING_FOR_UPDATE.value, s.IDLE.value]) == (0, "No update available")
    assert _run([s.CHECKING_FOR_UPDATE.value, s.DOWNLOADING.value,
                 s.REPORTING_ERROR_EVENT.value, s.IDLE.value]) == (1, "Update failed.")
    # IDLE before anything moved waits for the poll interval, then means "no update"
    assert _run([s.IDLE.value, s.IDLE.value]) is None
    assert _run([s.IDLE.value, s.IDLE.value], polled_at=1) == (0, "No update available")


# ----------------------------------------------------------------- the service's bodies


def test_service_bodies_have_the_wire_types() -> None:
    body = S.status_body(Snapshot(True, 1, "IDLE", "v", 3))  # type: ignore[arg-type]
    assert body == [1, 1.0, "IDLE", "v", 3]
    assert [type(v) for v in body] == [int, float, str, str, int]
    assert S.details_body({"a": 1}) == [{"a": "1"}]  # type: ignore[dict-item]


def test_a_call_without_interface_finds_its_method_by_member() -> None:
    key = S.UpdateBusService._method_key
    assert key(None, "GetStatus") == (S.INTERFACE, "GetStatus")
    assert key(None, "GetDetails") == (S.DETAILS_INTERFACE, "GetDetails")
    assert key(S.INTERFACE, "GetDetails") is None
    assert key("org.example", "GetStatus") is None


def test_start_dbus_service_is_off_without_a_bus() -> None:
    assert S.start_dbus_service(object(), "none") is None  # type: ignore[arg-type]
    assert S.start_dbus_service(object(), "auto", {}, lambda path: False) is None  # type: ignore[arg-type]
