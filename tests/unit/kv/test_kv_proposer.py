"""The single-node proposer's command log: replay, torn tails, compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flotilla.daemons.kv.proposer import (
    LOG_NAME,
    LocalProposer,
    encode_record,
    load_durable_store,
    read_records,
)
from flotilla.daemons.kv.store import Event


def test_torn_or_corrupt_tail_ends_the_log() -> None:
    good = encode_record(1, {"op": "put", "key": "/a", "params": {"value": "1"}, "now": 1})
    second = encode_record(2, {"op": "put", "key": "/b", "params": {}, "now": 2})
    records, valid = read_records(good + second[:-3])
    assert [seq for seq, _ in records] == [1] and valid == len(good)
    corrupt = bytearray(good + second)
    corrupt[-1] ^= 0xFF
    records, valid = read_records(bytes(corrupt))
    assert [seq for seq, _ in records] == [1] and valid == len(good)


async def _write(data_dir: Path, count: int, compact_bytes: int) -> tuple[int, int]:
    proposer = LocalProposer(data_dir, fsync=False, compact_bytes=compact_bytes)
    proposer.start()
    outcomes = await asyncio.gather(*(
        proposer.propose({"op": "put", "key": f"/k{i % 10}", "params": {"value": str(i)}})
        for i in range(count)))
    assert all(isinstance(o, Event) for o in outcomes)
    await proposer.close()
    return proposer.store.index, proposer.compactions


def test_log_is_replayed_and_compacted(tmp_path: Path) -> None:
    index, compactions = asyncio.run(_write(tmp_path, 300, compact_bytes=4000))
    assert index == 300 and compactions >= 1
    assert (tmp_path / LOG_NAME).stat().st_size < 4000
    store, seq = load_durable_store(tmp_path)
    assert store.index == 300 and seq == 300
    assert {store.get(f"/k{i}").node.value for i in range(10)} == {  # type: ignore[union-attr]
        str(i) for i in range(290, 300)}
    # A second life appends after the first: sequence numbers keep growing.
    index, _ = asyncio.run(_write(tmp_path, 5, compact_bytes=1 << 30))
    assert index == 305
    assert load_durable_store(tmp_path)[1] == 305
