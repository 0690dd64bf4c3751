"""Snapshot spacing: a large store is not re-serialised every ``--snapshot-count`` writes."""

from __future__ import annotations

import msgpack
from flotilla.daemons.kv.replicated import (
    MAX_SNAPSHOT_STRETCH,
    SNAPSHOT_BYTES_PER_ENTRY,
    KvStateMachine,
    snapshot_interval,
)


def test_small_snapshots_keep_the_configured_count() -> None:
    assert snapshot_interval(10_000, 0) == 10_000
    assert snapshot_interval(10_000, 1_000_000) == 10_000
    # A test cluster snapshotting every 5 entries keeps doing so with a small store.
    assert snapshot_interval(5, 200_000) == 5


def test_the_log_may_grow_to_about_the_snapshot_size_within_a_bound() -> None:
    size = 40_000 * SNAPSHOT_BYTES_PER_ENTRY
    assert snapshot_interval(10_000, size) == 40_000
    huge = 10**10
    assert snapshot_interval(10_000, huge) == MAX_SNAPSHOT_STRETCH * 10_000


def test_the_state_machine_reports_each_snapshot_size() -> None:
    sizes: list[int] = []
    sm = KvStateMachine()
    sm.on_snapshot = sizes.append
    sm.apply(2, msgpack.packb({"op": "put", "key": "/k", "now": 1,
                               "params": {"value": "v" * 1000}}))
    blob = sm.snapshot()
    assert sizes == [len(blob)] and sizes[0] > 1000
