"""ReadIndex bookkeeping on the leader: batch read requests into heartbeat rounds.

A read may be served at the commit index the leader had when the read arrived, once a
quorum has confirmed after that moment that it is still the leader. Rather than one
heartbeat broadcast per read, every read that arrives before the next broadcast joins
the same *round*; the heartbeat carries the round number as its context, and a quorum of
acknowledgements for round r releases every read of rounds <= r (a later confirmation
covers earlier requests too).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class PendingRead:
    index: int
    context: bytes
    requester: int  # the leader's own id for local reads
    round: int


def encode_round(number: int) -> bytes:
    return number.to_bytes(8, "big")


def decode_round(context: bytes) -> int | None:
    return int.from_bytes(context, "big") if len(context) == 8 else None


class ReadOnly:
    def __init__(self) -> None:
        self.queue: deque[PendingRead] = deque()
        self.round = 0  # last round number broadcast
        self.open_round = False  # reads are waiting for the next broadcast
        self.acks: dict[int, set[int]] = {}  # round -> voters that acknowledged it

    def add(self, index: int, context: bytes, requester: int) -> None:
        self.queue.append(PendingRead(index, context, requester, self.round + 1))
        self.open_round = True

    def start_round(self, self_id: int) -> bytes | None:
        """Called when heartbeats go out: returns the context to attach, if any."""
        if not self.open_round:
            return None
        self.open_round = False
        self.round += 1
        self.acks[self.round] = {self_id}
        return encode_round(self.round)

    def ack(self, context: bytes, voter: int) -> int | None:
        """Record an acknowledgement; returns the round number if it is tracked."""
        number = decode_round(context)
        if number is None or number not in self.acks:
            return None
        self.acks[number].add(voter)
        return number

    def release(self, number: int) -> list[PendingRead]:
        """A quorum acknowledged round ``number``: pop every read of rounds <= it."""
        out: list[PendingRead] = []
        while self.queue and self.queue[0].round <= number:
            out.append(self.queue.popleft())
        for r in [r for r in self.acks if r <= number]:
            del self.acks[r]
        return out

    def reset(self) -> None:
        self.queue.clear()
        self.acks.clear()
        self.open_round = False
