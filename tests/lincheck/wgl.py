"""The Wing-Gong search with Lowe's memoization, for one independent sub-history.

The history becomes one time-ordered list of call and return events. The search walks
it from the front: at a call it tries to linearize that operation now (the model must
accept its output from the current state), removes the operation's call and return
from the list and starts over from the front; at a return it has met an operation that
finished without being linearized, so the last choice was wrong and it backtracks.
Lowe's improvement remembers every (set of linearized operations, model state) pair it
has reached: reaching one again cannot lead anywhere new, which prunes the exponential
search to something that finishes quickly on real histories.

Events at the same instant are ordered calls first, so touching intervals count as
concurrent and the checker never rejects a history because of clock granularity.
Operations with an unknown outcome return "at infinity": they may be linearized
anywhere after their call, and the search succeeds as soon as every operation with a
known outcome is linearized, since the rest can then all be placed last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .history import Operation
from .model import Model


class _Event:
    """A node of the doubly linked event list (a call or a return)."""

    __slots__ = ("call", "index", "match", "next", "op", "prev", "time")

    def __init__(self, index: int, op: Operation | None, time: float, call: bool) -> None:
        self.index = index
        self.op = op
        self.time = time
        self.call = call
        self.match: _Event | None = None
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _event_list(ops: list[Operation]) -> _Event:
    """The head sentinel of the event list, events sorted by time with calls first."""
    events: list[_Event] = []
    for i, op in enumerate(ops):
        call = _Event(i, op, op.call, True)
        ret = _Event(i, op, op.ret if op.ret is not None else math.inf, False)
        call.match = ret
        events += (call, ret)
    events.sort(key=lambda e: (e.time, not e.call, e.index))
    head = _Event(-1, None, -math.inf, True)
    prev = head
    for event in events:
        prev.next, event.prev = event, prev
        prev = event
    return head


def _lift(call: _Event) -> None:
    """Takes an operation's call and return out of the list."""
    ret = call.match
    assert call.prev is not None and ret is not None and ret.prev is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Event) -> None:
    """Puts back what :func:`_lift` took out (in reverse order, so links are restored)."""
    ret = call.match
    assert call.prev is not None and ret is not None and ret.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


@dataclass
class SearchResult:
    """Verdict for one sub-history.

    ``linearizable`` is None when ``max_steps`` ran out first. ``order`` is a valid
    linearization (indexes into the operations, operations with an unknown outcome left
    out are the ones that need not have happened) when one was found.
    """

    linearizable: bool | None
    steps: int
    order: list[int]


def _first_visit(seen: dict[tuple[int, Any], list[int]], linearized: int, known_mask: int,
                 state: Any) -> bool:
    """Records a configuration; False if an equally or more flexible one was seen before.

    Lowe's memo compares whole linearized sets. Unknown-outcome operations allow a
    stronger rule: having linearized fewer of them is never worse, because the rest can
    stay pending for ever. So a configuration is pruned when one with the same known
    operations and state, and a subset of its unknown ones, was already explored; without
    this, every combination of timed-out writes would be searched separately.
    """
    key = (linearized & known_mask, state)
    unknown = linearized & ~known_mask
    earlier = seen.get(key)
    if earlier is None:
        seen[key] = [unknown]
        return True
    if any(old & ~unknown == 0 for old in earlier):
        return False
    earlier.append(unknown)
    return True


def search(model: Model, ops: list[Operation], max_steps: int | None = None) -> SearchResult:
    """Whether ``ops`` (one partition of a history) has a linearization under ``model``."""
    known_left = sum(1 for op in ops if op.known)
    if known_left == 0:
        return SearchResult(True, 0, [])
    head = _event_list(ops)
    state: Any = model.init()
    linearized = 0
    unknown_mask = 0
    for i, op in enumerate(ops):
        if not op.known:
            unknown_mask |= 1 << i
    known_mask = ((1 << len(ops)) - 1) & ~unknown_mask
    # (linearized known operations, state) -> sets of linearized unknown operations
    seen: dict[tuple[int, Any], list[int]] = {}
    stack: list[tuple[_Event, Any]] = []
    entry = head.next
    steps = 0
    # Candidates are tried known operations first, then unknown ones: an unknown write is
    # then only linearized when nothing else fits, which keeps the memo effective.
    unknown_phase = False
    while True:
        steps += 1
        if max_steps is not None and steps > max_steps:
            return SearchResult(None, steps, [])
        if entry is not None and entry.call:
            op = entry.op
            assert op is not None
            if op.known == unknown_phase:
                entry = entry.next
                continue
            ok, new_state = model.step(state, op)
            if ok:
                new_linearized = linearized | (1 << entry.index)
                if _first_visit(seen, new_linearized, known_mask, new_state):
                    stack.append((entry, state))
                    state, linearized = new_state, new_linearized
                    _lift(entry)
                    if op.known:
                        known_left -= 1
                        if known_left == 0:
                            return SearchResult(True, steps, [e.index for e, _ in stack])
                    entry = head.next
                    unknown_phase = False
                    continue
            entry = entry.next
            continue
        if not unknown_phase:
            unknown_phase = True
            entry = head.next
            continue
        # A return of an operation not yet linearized (or the end of the list): every
        # placement tried since the last choice is a dead end, so undo that choice.
        if not stack:
            return SearchResult(False, steps, [])
        top, state = stack.pop()
        linearized &= ~(1 << top.index)
        assert top.op is not None
        if top.op.known:
            known_left += 1
        _unlift(top)
        entry = top.next
        unknown_phase = not top.op.known
