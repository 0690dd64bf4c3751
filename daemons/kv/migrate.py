"""One-time move of a data directory from the old single-node format into Raft's.

kvd used to run a lone member without Raft: ``snapshot.msgpack`` plus ``commands.log``
(see :mod:`flotilla.daemons.kv.proposer`). A lone member is now a one-voter Raft cluster,
so it can grow with ``member add``. A directory in the old format is converted once, the
first time the new kvd starts on it:

1. the store is rebuilt from the old snapshot and log (nothing acknowledged is lost: the
   old format only acknowledged fsynced records);
2. a Raft state directory is written beside it under a temporary name, holding one Raft
   snapshot of that store (this member the only voter, the old sequence number as its
   Raft index, so ``X-Raft-Index`` keeps counting up) and a hard state committing it;
   everything is fsynced;
3. the temporary directory is renamed to ``raft`` and the parent directory fsynced: from
   this instant the directory is in the new format;
4. the old files are deleted.

A crash before step 3 leaves the old files authoritative and the next start converts
again from scratch; a crash after it leaves stale old files that are ignored (a ``raft``
directory wins) and deleted on the next start.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import msgpack
from flotilla.daemons.durable import fsync_dir
from flotilla.daemons.kv.config import ConfigError
from flotilla.daemons.kv.proposer import LOG_NAME, SNAPSHOT_NAME, load_durable_store
from flotilla.daemons.kv.store import DEFAULT_HISTORY_BYTES, Store
from flotilla.daemons.raft.core import BOOTSTRAP_INDEX
from flotilla.daemons.raft.messages import HardState, Snapshot, SnapshotMeta
from flotilla.daemons.raft.storage import DiskStorage

#: Raft term given to the converted state; the member's first election moves past it.
MIGRATED_TERM = 1
_OLD_FILES = (SNAPSHOT_NAME, LOG_NAME)


def has_single_node_data(data_dir: Path) -> bool:
    """True when ``data_dir`` holds the old format and no Raft state yet."""
    return (data_dir / SNAPSHOT_NAME).is_file() and not _has_raft_state(data_dir / "raft")


def _has_raft_state(raft_dir: Path) -> bool:
    return raft_dir.is_dir() and any(raft_dir.iterdir())


def remove_stale_files(data_dir: Path) -> None:
    """Delete old-format files left by a conversion interrupted after its rename."""
    if _has_raft_state(data_dir / "raft"):
        for name in _OLD_FILES:
            (data_dir / name).unlink(missing_ok=True)


def migrate_single_node(data_dir: Path, raft_dir_name: str, member_id: int,
                        snapshot_of: Callable[[Store], bytes],
                        history_bytes: int = DEFAULT_HISTORY_BYTES) -> int:
    """Convert ``data_dir`` in place; returns the Raft index the store now sits at.

    ``snapshot_of`` turns the recovered store into the replicated state machine's
    snapshot bytes. Raises ConfigError naming the directory if the old files cannot be
    read; the directory is then left as it was.
    """
    try:
        store, seq = load_durable_store(data_dir, history_bytes)
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as err:
        raise ConfigError(f"--data-dir {data_dir}: cannot read the single-node data to "
                          f"convert it: {err}") from None
    index = max(seq, BOOTSTRAP_INDEX)
    meta = SnapshotMeta(index=index, term=MIGRATED_TERM, voters=(member_id,))
    # The Raft shell's snapshot envelope: application bytes plus its address book.
    blob = msgpack.packb({"app": snapshot_of(store), "peers": {}}, use_bin_type=True)
    final = data_dir / raft_dir_name
    temp = data_dir / f"{raft_dir_name}.converting"
    shutil.rmtree(temp, ignore_errors=True)
    if final.exists():
        final.rmdir()  # empty: has_single_node_data said there is no Raft state
    storage = DiskStorage.open(temp)
    try:
        storage.save(snapshot=Snapshot(meta, blob),
                     hard_state=HardState(term=MIGRATED_TERM, commit=index))
        storage.sync()
    finally:
        storage.close()
    temp.rename(final)
    fsync_dir(data_dir)
    remove_stale_files(data_dir)
    return index
