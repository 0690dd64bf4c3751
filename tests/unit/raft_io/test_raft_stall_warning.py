"""The shell's warning about a leader whose commit index stands still behind its log."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flotilla.daemons.raft.messages import Role
from flotilla.daemons.raft.node import STALL_WARNING_SECONDS, RaftShell, ShellConfig


@dataclass
class LogView:
    committed: int
    last: int

    def last_index(self) -> int:
        return self.last


@dataclass
class CoreView:
    """Only what the warning reads from the core: role, term, log and progress."""

    role: Role
    log: LogView
    term: int = 3
    progress: dict[int, tuple[str, int, int]] = field(
        default_factory=lambda: {2: ("replicate", 7, 12), 3: ("probe", 5, 6)})

    def status(self) -> object:
        return type("Status", (), {"progress": self.progress})()


def shell_with(core: CoreView, tmp_path: Path) -> RaftShell:
    shell = RaftShell(ShellConfig(node_id=1, data_dir=tmp_path, listen=("127.0.0.1", 0),
                                  peers={}), sm=None)  # type: ignore[arg-type]
    shell.core = core  # type: ignore[assignment]
    return shell


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_stuck_leader_is_reported_with_its_followers_progress(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    core = CoreView(Role.LEADER, LogView(committed=7, last=12))
    shell = shell_with(core, tmp_path)
    with caplog.at_level(logging.WARNING):
        shell._warn_if_stalled(100.0)
        shell._warn_if_stalled(100.0 + STALL_WARNING_SECONDS - 0.1)
        assert warnings(caplog) == []
        shell._warn_if_stalled(100.0 + STALL_WARNING_SECONDS)
    [line] = warnings(caplog)
    assert "has not committed past 7" in line and "last index 12" in line
    assert "('probe', 5, 6)" in line


def test_progress_or_a_caught_up_log_resets_the_clock(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    core = CoreView(Role.LEADER, LogView(committed=7, last=12))
    shell = shell_with(core, tmp_path)
    with caplog.at_level(logging.WARNING):
        shell._warn_if_stalled(0.0)
        core.log.committed = 8  # moved: a slow but working cluster
        shell._warn_if_stalled(STALL_WARNING_SECONDS)
        core.log.committed = 12  # caught up
        shell._warn_if_stalled(2 * STALL_WARNING_SECONDS)
        core.log.last = 13
        shell._warn_if_stalled(3 * STALL_WARNING_SECONDS)
        shell._warn_if_stalled(4 * STALL_WARNING_SECONDS - 0.1)
    assert warnings(caplog) == []


def test_followers_never_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    core = CoreView(Role.FOLLOWER, LogView(committed=7, last=12))
    shell = shell_with(core, tmp_path)
    with caplog.at_level(logging.WARNING):
        for second in range(10):
            shell._warn_if_stalled(float(second) * STALL_WARNING_SECONDS)
    assert warnings(caplog) == []
