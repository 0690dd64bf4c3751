"""The wall message's bytes and the utmp reader that finds the terminals to write it to."""

from __future__ import annotations

from flotilla.daemons.locksmith import wall


def record(kind: int, line: str) -> bytes:
    return wall.UTMP_RECORD.pack(kind, 42, line.encode(), b"ts/0", b"core", b"", 0, 0, 0, 0,
                                 0, 0, 0, 0, 0)


def test_text_is_locksmiths_four_padded_lines_with_two_bells() -> None:
    text = wall.broadcast_text("Fri 2026-12-04 18:30:00 UTC", wall.REBOOT_MESSAGE).decode()
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert lines[0] == "\r" + " " * 79 and lines[3] == "\r" + " " * 79
    assert lines[1] == ("Broadcast message from locksmithd at Fri 2026-12-04 18:30:00 UTC:"
                        .ljust(79) + "\a\a")
    assert lines[2] == "System reboot in 5 minutes!".ljust(79)


def test_overlong_lines_are_cut_at_79_columns() -> None:
    text = wall.broadcast_text("x" * 100, "m").decode()
    assert len(text.split("\r\n")[1]) == 79 + 2


def test_only_user_sessions_on_terminals_are_chosen() -> None:
    data = (record(2, "~") + record(7, "pts/3") + record(6, "tty1") + record(7, "tty2")
            + record(7, "../etc/passwd") + record(7, "") + b"short")
    assert list(wall.user_terminals(data)) == ["pts/3", "tty2"]


def test_no_utmp_means_nobody_to_tell(tmp_path) -> None:
    assert wall.broadcast("hi", "now", root=str(tmp_path)) == 0


def test_writes_to_each_terminal_in_utmp(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "dev/pts").mkdir(parents=True)
    (tmp_path / "dev/pts/3").write_bytes(b"")
    (tmp_path / "run/utmp").write_bytes(record(7, "pts/3") + record(7, "pts/9"))
    assert wall.broadcast("hi", "now", root=str(tmp_path)) == 1
    assert (tmp_path / "dev/pts/3").read_bytes() == wall.broadcast_text("now", "hi")
