"""The node shell in-process on loopback: acknowledged = applied, group commit, snapshots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from flotilla.daemons.raft.messages import NotLeader
from flotilla.daemons.raft.node import ListMachine, RaftShell, ShellConfig

from .harness import free_port


def single(tmp_path: Path, **kw) -> tuple[RaftShell, ListMachine]:
    sm = ListMachine()
    cfg = ShellConfig(
        node_id=1, data_dir=tmp_path / "d1", listen=("127.0.0.1", free_port("127.0.0.1")),
        peers={}, tick_seconds=0.02, **kw,
    )
    return RaftShell(cfg, sm), sm


async def until_leader(shell: RaftShell) -> None:
    async def loop() -> None:
        while shell.leader != 1:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), 10)


@pytest.mark.timeout(60)
def test_propose_returns_once_applied_and_proposals_share_fsyncs(tmp_path: Path) -> None:
    async def go() -> None:
        shell, sm = single(tmp_path)
        await shell.start()
        await until_leader(shell)
        index = await shell.propose(b"first")
        assert sm.values == ["first"] and shell.applied >= index
        before = shell.storage.fsyncs
        indexes = await asyncio.gather(*(shell.propose(f"v{i}".encode()) for i in range(500)))
        assert sorted(indexes) == indexes or len(set(indexes)) == 500
        assert sm.values[1:] == [f"v{i}" for i in range(500)]
        fsyncs = shell.storage.fsyncs - before
        assert fsyncs < 100, f"{fsyncs} fsyncs for 500 proposals: no group commit"
        assert await shell.read_index() >= max(indexes)
        await shell.stop()

    asyncio.run(go())


@pytest.mark.timeout(60)
def test_restart_recovers_state_from_snapshot_and_log(tmp_path: Path) -> None:
    async def go() -> None:
        shell, _ = single(tmp_path, snapshot_every=50, segment_bytes=4096)
        await shell.start()
        await until_leader(shell)
        for i in range(230):
            await shell.propose(f"v{i}".encode())
        assert shell.stats.snapshots_taken >= 4
        wal_files = list((tmp_path / "d1" / "wal").glob("*.wal"))
        await shell.stop()
        assert len(wal_files) < 10  # covered segments were released

        again, sm2 = single(tmp_path, snapshot_every=50, segment_bytes=4096)
        await again.start()
        await until_leader(again)
        await again.propose(b"after-restart")
        assert sm2.values == [f"v{i}" for i in range(230)] + ["after-restart"]
        await again.stop()

    asyncio.run(go())


@pytest.mark.timeout(60)
def test_membership_refused_on_a_follower_names_the_leader(tmp_path: Path) -> None:
    async def go() -> None:
        ports = {i: free_port(f"127.0.0.{i}") for i in (1, 2)}
        peers = {i: (f"127.0.0.{i}", ports[i]) for i in (1, 2)}
        shells = []
        for i in (1, 2):
            cfg = ShellConfig(node_id=i, data_dir=tmp_path / f"d{i}", listen=peers[i],
                              peers={k: v for k, v in peers.items() if k != i},
                              tick_seconds=0.02)
            shells.append(RaftShell(cfg, ListMachine()))
        for s in shells:
            await s.start()

        async def leader() -> RaftShell:
            while True:
                for s in shells:
                    if s.leader == s.cfg.node_id:
                        return s
                await asyncio.sleep(0.01)

        lead = await asyncio.wait_for(leader(), 10)
        follower = next(s for s in shells if s is not lead)

        async def follower_knows() -> None:
            while follower.leader != lead.cfg.node_id:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(follower_knows(), 10)
        await follower.propose(b"forwarded")  # followers forward proposals
        assert follower.stats.proposals_forwarded == 1
        with pytest.raises(NotLeader) as info:
            await follower.add_member(3, ("127.0.0.3", 1))
        assert info.value.leader == lead.cfg.node_id
        for s in shells:
            await s.stop()

    asyncio.run(go())


@pytest.mark.timeout(60)
def test_snapshot_bytes_live_on_disk_and_are_read_back_to_be_sent(tmp_path: Path) -> None:
    """A taken snapshot is not kept in memory; a SNAP to a follower gets it from its file."""
    from flotilla.daemons.raft.messages import Message, MessageType, Snapshot, SnapshotMeta

    async def go() -> None:
        shell, _ = single(tmp_path, snapshot_every=50)
        await shell.start()
        await until_leader(shell)
        for i in range(120):
            await shell.propose(f"v{i}".encode())
        assert shell.stats.snapshots_taken >= 2
        kept = shell.core.log.snapshot
        assert kept.meta.index >= 100 and kept.data == b""
        on_disk = shell.storage.read_snapshot(kept.meta)
        assert on_disk.data  # the state, with every value up to the snapshot
        snap = Message(MessageType.SNAP, to=2, from_=1, term=shell.core.term, snapshot=kept)
        sent = shell._with_snapshot_data(snap)
        assert sent is not None and sent.snapshot == on_disk
        # Never an empty state in place of one whose file is gone.
        gone = Message(MessageType.SNAP, to=2, from_=1, term=shell.core.term,
                       snapshot=Snapshot(SnapshotMeta(kept.meta.index + 1, kept.meta.term,
                                                      kept.meta.voters)))
        assert shell._with_snapshot_data(gone) is None
        await shell.stop()

        again, sm2 = single(tmp_path, snapshot_every=50)
        await again.start()
        assert again.core.log.snapshot.data == b""  # also dropped after a restart
        assert again.storage.persisted.snapshot.data == b""
        await until_leader(again)
        assert sm2.values == [f"v{i}" for i in range(120)]
        await again.stop()

    asyncio.run(go())
