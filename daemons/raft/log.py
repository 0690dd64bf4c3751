"""The in-memory Raft log: a snapshot base, the entries after it, and what is durable.

The core keeps the whole uncompacted log in memory (the shell's storage holds the same
entries on disk); ``compact`` drops the prefix covered by a snapshot. Two cursors track
the shell's progress: ``unstable_from`` (first index not yet handed out for persistence
and acknowledged by ``advance``) and ``applied``. Indexes are 1-based; index 0 / term 0
is the empty log's sentinel.
"""

from __future__ import annotations

from .messages import Entry, Snapshot


class LogSafetyError(AssertionError):
    """Raised when a request would rewrite committed history: a bug, never a peer fault."""


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: tuple[Entry, ...], committed: int) -> None:
        self.snapshot = snapshot
        self.offset = snapshot.meta.index  # entries[k] has index offset + 1 + k
        self.offset_term = snapshot.meta.term
        self.entries: list[Entry] = list(entries)
        if self.entries and self.entries[0].index != self.offset + 1:
            raise ValueError(
                f"entries[0].index: {self.entries[0].index} does not follow "
                f"snapshot index {self.offset}"
            )
        for k in range(1, len(self.entries)):
            if self.entries[k].index != self.entries[k - 1].index + 1:
                raise ValueError(f"entries[{k}].index: not contiguous")
        if committed > self.last_index():
            raise ValueError(
                f"hard_state.commit: {committed} is beyond the last stored entry "
                f"{self.last_index()} (entries lost from storage)"
            )
        committed = max(committed, self.offset)  # a snapshot is always committed
        self.committed = committed
        self.applied = self.offset
        self.unstable_from = self.last_index() + 1
        #: a snapshot received from the leader that the shell has not persisted yet
        self.pending_snapshot: Snapshot | None = None

    # -- queries ---------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        k = index - self.offset - 1
        if k < 0 or k >= len(self.entries):
            return None
        return self.entries[k].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction: is (last_term, last_index) at least as new as our log?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int = 0) -> list[Entry]:
        """Entries [lo, hi); at least one entry, then only while under ``max_bytes``."""
        lo_k = lo - self.offset - 1
        hi_k = hi - self.offset - 1
        if lo_k < 0:
            raise IndexError(f"index {lo} is compacted")
        out = self.entries[lo_k:hi_k]
        if max_bytes and len(out) > 1:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 16
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest i <= index whose term is <= ``term`` (fast backtracking), with its term.

        A rejected append tells the leader where our log could still match: every entry
        with a higher term than the leader's at that index must be replaced anyway.
        """
        index = min(index, self.last_index())
        while index > self.offset:
            t = self.entries[index - self.offset - 1].term
            if t <= term:
                return index, t
            index -= 1
        return index, self.offset_term if index == self.offset else 0

    def unstable_entries(self) -> tuple[Entry, ...]:
        k = self.unstable_from - self.offset - 1
        return tuple(self.entries[max(k, 0) :])

    def next_committed(self, max_index: int | None = None) -> tuple[Entry, ...]:
        hi = self.committed if max_index is None else min(self.committed, max_index)
        if hi <= self.applied:
            return ()
        lo = max(self.applied + 1, self.first_index())
        return tuple(self.entries[lo - self.offset - 1 : hi - self.offset])

    # -- mutations -------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        """Append after the last entry (leader path); returns the new last index."""
        self.entries.extend(entries)
        return self.last_index()

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Follower path of AppendEntries; returns the last new index or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        for e in entries:
            t = self.term(e.index)
            if t == e.term:
                continue
            if e.index <= self.offset:
                continue  # covered by our snapshot, hence committed and identical
            if e.index <= self.committed:
                raise LogSafetyError(
                    f"entry {e.index} conflicts with committed entry (commit {self.committed})"
                )
            self._truncate_and_append(entries[e.index - index - 1 :])
            break
        self.commit_to(min(committed, last_new))
        return last_new

    def _truncate_and_append(self, entries: tuple[Entry, ...]) -> None:
        first = entries[0].index
        del self.entries[first - self.offset - 1 :]
        self.entries.extend(entries)
        self.unstable_from = min(self.unstable_from, first)

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise LogSafetyError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a follower far behind its leader)."""
        self.snapshot = snapshot
        self.offset = snapshot.meta.index
        self.offset_term = snapshot.meta.term
        self.entries = []
        self.committed = snapshot.meta.index
        self.unstable_from = self.offset + 1
        self.pending_snapshot = snapshot

    def stable_to(self, index: int, term: int) -> None:
        """The shell persisted entries up to ``index``; ignore if the log changed since."""
        if self.term(index) == term and index >= self.unstable_from:
            self.unstable_from = index + 1

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries up to ``snapshot.meta.index`` (already applied and snapshotted)."""
        index = snapshot.meta.index
        del self.entries[: index - self.offset]
        self.snapshot = snapshot
        self.offset = index
        self.offset_term = snapshot.meta.term
