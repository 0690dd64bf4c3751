"""A Ready whose write is slow: no backlog of ticks afterwards, and a warning naming it.

A real lone-member shell on a temporary directory; only its storage's ``save_ready`` is
slowed down (in the I/O thread, where a starved disk would hold it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from flotilla.daemons.raft.node import SLOW_SYNC_SECONDS, RaftShell, ShellConfig

TICK = 0.02


class Counter:
    """The state machine: counts applied entries."""

    def __init__(self) -> None:
        self.applied = 0

    def apply(self, index: int, data: bytes) -> Any:
        self.applied += 1
        return index

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        self.applied = 0


async def slow_write_run(tmp_path: Path, delay: float) -> tuple[list[float], float, float]:
    """Proposes once with every write taking ``delay``; returns the times the core ticked
    and the write's start and end."""
    shell = RaftShell(ShellConfig(node_id=1, data_dir=tmp_path, listen=("127.0.0.1", 0),
                                  peers={}, tick_seconds=TICK, campaign_at_start=True),
                      sm=Counter())
    await shell.start()
    try:
        await shell.propose(b"warm-up")  # elected and caught up before the slow write
        core, storage = shell.core, shell.storage
        assert core is not None and storage is not None
        ticks: list[float] = []
        real_tick, real_save = core.tick, storage.save_ready
        window: list[float] = []

        def counting_tick() -> None:
            ticks.append(time.monotonic())
            real_tick()

        def slow_save(rd: Any) -> None:
            window.append(time.monotonic())
            time.sleep(delay)
            real_save(rd)
            window.append(time.monotonic())

        core.tick = counting_tick  # type: ignore[method-assign]
        storage.save_ready = slow_save  # type: ignore[method-assign]
        await shell.propose(b"slow")
        storage.save_ready = real_save  # type: ignore[method-assign]
        await asyncio.sleep(10 * TICK)
        return ticks, window[0], window[1]
    finally:
        await shell.stop()


def test_ticks_missed_during_a_slow_write_are_not_stepped_in_a_burst(tmp_path: Path) -> None:
    ticks, began, ended = asyncio.run(slow_write_run(tmp_path, 25 * TICK))
    # 25 tick periods passed inside the write; one tick stands for all of them, so the
    # three periods after it see that one and the ticker's own three at most (a backlog
    # would step all 25 there).
    stepped_soon_after = [t for t in ticks if ended <= t <= ended + 3 * TICK]
    assert 1 <= len(stepped_soon_after) <= 4, ticks
    assert not [t for t in ticks if began < t < ended], "nothing is stepped mid-write"
    assert [t for t in ticks if t > ended + TICK], "ticking goes on after the write"


def test_a_write_slower_than_a_second_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flotilla.daemons.raft.node"):
        asyncio.run(slow_write_run(tmp_path, SLOW_SYNC_SECONDS + 0.1))
    [line] = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert "writing 1 entries took" in line and "expected less than 1s" in line


def test_a_fast_write_is_not_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flotilla.daemons.raft.node"):
        asyncio.run(slow_write_run(tmp_path, 0.0))
    assert not [r for r in caplog.records if "took" in r.getMessage()]
