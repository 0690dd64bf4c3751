"""Requests through the Raft shell time out by a shared deadline sweep, not per-request
timers (the cheaper path every write of a lone kvd takes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from flotilla.daemons.kv.replicated import KvStateMachine
from flotilla.daemons.raft.node import ProposalTimeout, RaftShell, ShellConfig


def _shell(tmp_path: Path) -> RaftShell:
    cfg = ShellConfig(node_id=1, data_dir=tmp_path, listen=("127.0.0.1", 0), peers={},
                      proposal_timeout=5.0)
    return RaftShell(cfg, KvStateMachine())  # never started: no sockets, no disk


def test_only_requests_past_their_deadline_fail(tmp_path: Path) -> None:
    async def run() -> None:
        shell = _shell(tmp_path)
        rid_old, fut_old = shell._new_request()
        waiter_old = asyncio.ensure_future(shell._wait(rid_old, fut_old))
        await asyncio.sleep(0)
        rid_new, fut_new = shell._new_request()
        waiter_new = asyncio.ensure_future(shell._wait(rid_new, fut_new))
        await asyncio.sleep(0)
        first_deadline = shell._deadlines[0][0]
        shell._expire_requests(first_deadline - 1.0)  # nothing due yet
        assert not waiter_old.done() and not waiter_new.done()
        shell._resolve(rid_new, "applied")
        assert await waiter_new == "applied"
        shell._expire_requests(first_deadline)
        with pytest.raises(ProposalTimeout, match=r"not applied within 5\.0s"):
            await waiter_old
        assert not shell._waiting
        # An answered request leaves only a stale deadline, which the sweep skips.
        rid, fut = shell._new_request()
        waiter = asyncio.ensure_future(shell._wait(rid, fut))
        await asyncio.sleep(0)
        shell._resolve(rid, 7)
        assert await waiter == 7
        shell._expire_requests(float("inf"))
        assert not shell._deadlines and not shell._waiting

    asyncio.run(run())
