"""Converting a data dir of the old single-node format into a one-voter Raft state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest
from flotilla.daemons.kv.config import ConfigError, parse_config
from flotilla.daemons.kv.membership import MEMBER_FILE
from flotilla.daemons.kv.migrate import has_single_node_data, migrate_single_node
from flotilla.daemons.kv.proposer import LOG_NAME, SNAPSHOT_NAME, LocalProposer
from flotilla.daemons.kv.replicated import RAFT_DIR, KvStateMachine, convert_single_node_data
from flotilla.daemons.kv.store import Event, Store
from flotilla.daemons.raft.storage import DiskStorage


async def _old_format(data_dir: Path, count: int) -> int:
    """Write ``count`` keys with the old single-node proposer; returns the store index."""
    proposer = LocalProposer(data_dir, fsync=False, compact_bytes=1 << 30)
    proposer.start()
    for i in range(count):
        outcome = await proposer.propose(
            {"op": "put", "key": f"/old/k{i}", "params": {"value": str(i)}})
        assert isinstance(outcome, Event)
    await proposer.close()
    return proposer.store.index


def _snapshot_of(store: Store) -> bytes:
    machine = KvStateMachine(peers={7: ["http://127.0.0.1:2380"]})
    machine.store = store
    return machine.snapshot()


def _restored(data_dir: Path) -> tuple[KvStateMachine, int, tuple[int, ...]]:
    storage = DiskStorage.open(data_dir / RAFT_DIR)
    try:
        snap = storage.persisted.snapshot
        assert storage.persisted.hard_state.commit == snap.meta.index
    finally:
        storage.close()
    machine = KvStateMachine()
    machine.restore(msgpack.unpackb(snap.data, raw=False)["app"])
    return machine, snap.meta.index, snap.meta.voters


def test_conversion_keeps_every_key_and_the_store_index(tmp_path: Path) -> None:
    index = asyncio.run(_old_format(tmp_path, 25))
    assert has_single_node_data(tmp_path)
    raft_index = migrate_single_node(tmp_path, RAFT_DIR, 7, _snapshot_of)
    assert raft_index == 25  # the old sequence number: X-Raft-Index keeps counting up
    assert not (tmp_path / SNAPSHOT_NAME).exists() and not (tmp_path / LOG_NAME).exists()
    assert not has_single_node_data(tmp_path)
    machine, at, voters = _restored(tmp_path)
    assert at == 25 and voters == (7,)
    assert machine.store.index == index == 25
    got = machine.store.get("/old/k24")
    assert got.node.value == "24"
    assert machine.peers == {7: ["http://127.0.0.1:2380"]}


def test_an_interrupted_conversion_is_redone_and_stale_old_files_go(tmp_path: Path) -> None:
    asyncio.run(_old_format(tmp_path, 3))
    # A crash before the rename leaves a half-written temporary directory.
    (tmp_path / f"{RAFT_DIR}.converting").mkdir()
    (tmp_path / f"{RAFT_DIR}.converting" / "junk").write_bytes(b"x")
    migrate_single_node(tmp_path, RAFT_DIR, 7, _snapshot_of)
    assert not (tmp_path / f"{RAFT_DIR}.converting").exists()
    assert _restored(tmp_path)[0].store.index == 3


def test_an_empty_old_store_converts_at_the_first_raft_index(tmp_path: Path) -> None:
    asyncio.run(_old_format(tmp_path, 0))
    assert migrate_single_node(tmp_path, RAFT_DIR, 7, _snapshot_of) == 1
    assert _restored(tmp_path)[0].store.index == 0


def test_unreadable_old_data_is_refused_naming_the_directory_and_left_alone(
        tmp_path: Path) -> None:
    (tmp_path / SNAPSHOT_NAME).write_bytes(msgpack.packb({"nope": 1}))
    with pytest.raises(ConfigError, match=str(tmp_path)):
        migrate_single_node(tmp_path, RAFT_DIR, 7, _snapshot_of)
    assert (tmp_path / SNAPSHOT_NAME).exists() and not (tmp_path / RAFT_DIR).exists()


def _config(data_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    return parse_config(["--name", "a", "--data-dir", str(data_dir),
                         "--listen-peer-urls", "http://127.0.0.9:2380", *extra], environ={})


def test_a_lone_member_converts_and_writes_no_identity_of_its_own(tmp_path: Path) -> None:
    asyncio.run(_old_format(tmp_path, 2))
    config = _config(tmp_path)
    convert_single_node_data(config)
    machine, _, voters = _restored(tmp_path)
    assert voters == (config.member_id,)
    assert machine.peers == {config.member_id: ["http://127.0.0.9:2380"]}
    assert machine.store.index == 2
    convert_single_node_data(config)  # a second start finds Raft data: nothing to do
    assert _restored(tmp_path)[0].store.index == 2


@pytest.mark.parametrize("extra", [
    ["--initial-cluster", "a=http://127.0.0.9:2380,b=http://127.0.0.10:2380"],
    ["--initial-cluster-state", "existing",
     "--initial-cluster", "a=http://127.0.0.9:2380,b=http://127.0.0.10:2380"],
])
def test_a_member_of_several_refuses_old_single_node_data(tmp_path: Path,
                                                          extra: list[str]) -> None:
    asyncio.run(_old_format(tmp_path, 1))
    with pytest.raises(ConfigError, match=f"--data-dir {tmp_path}: holds a single-node"):
        convert_single_node_data(_config(tmp_path, *extra))
    assert has_single_node_data(tmp_path) and not (tmp_path / MEMBER_FILE).exists()
