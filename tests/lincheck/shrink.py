"""From a rejected sub-history to a small one that shows the contradiction.

Every reduction keeps the sub-history rejected, and each kind of reduction is chosen so
that the small history is evidence against the big one, not a different story:

1. Cut the history at the first return after which no linearization exists. Operations
   that returned before the cut stay as they are; those still running at the cut become
   "unknown outcome"; later ones go. Any linearization of the whole history would give
   one of the cut, so a rejected cut proves the whole history wrong.
2. Drop the longest prefix that is not needed, treating the key's value at the cut as
   unknown (see :func:`trim_front`).
3. Drop operations that leave the state unchanged (reads, refused compare-and-swaps,
   deletes of a missing key). A linearization of the bigger history minus such an
   operation is still a linearization, so a rejected smaller history is again proof.
4. Drop writes whose value no remaining operation reads or compares against. This
   step is a heuristic for brevity: it keeps writes that explain what was observed,
   so the witness does not blame a read for a value some dropped write produced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .history import CAS, DELETE, GET, PUT, Operation
from .model import Model
from .wgl import search

#: Bounds the work spent making the report short; a longer witness is still correct.
SHRINK_SECONDS = 5.0


def _changes_nothing(op: Operation) -> bool:
    if op.kind == GET:
        return True
    if op.kind == CAS:
        return op.known and not op.output
    if op.kind == DELETE:
        return op.known and not op.output
    return False


def _saw_existence(op: Operation) -> bool:
    """A delete that found the key, or a create-if-absent that was refused."""
    if not op.known:
        return False
    if op.kind == DELETE:
        return bool(op.output)
    return op.kind == CAS and op.arg[0] is None and not op.output


def _observed(op: Operation) -> set[object]:
    """Values an operation's recorded outcome depends on (none when it is unknown)."""
    if not op.known:
        return set()
    if op.kind == GET:
        return {op.output}
    if op.kind == CAS:
        return {op.arg[0]}
    return set()


def cut_at_failure(model: Model, ops: list[Operation]) -> list[Operation]:
    """The shortest prefix (by return time) that is already rejected (step 1)."""
    returns = sorted({op.ret for op in ops if op.ret is not None})

    def cut(t: float) -> list[Operation]:
        kept = []
        for op in ops:
            if op.ret is not None and op.ret <= t:
                kept.append(op)
            elif op.call <= t:
                kept.append(Operation(op.client, op.kind, op.key, op.arg, op.call, None))
        return kept

    lo, hi = 0, len(returns) - 1
    while lo < hi:  # rejection is monotonic in the cut time
        mid = (lo + hi) // 2
        if search(model, cut(returns[mid])).linearizable is False:
            hi = mid
        else:
            lo = mid + 1
    return cut(returns[lo]) if returns else list(ops)


def _drop_greedily(model: Model, ops: list[Operation],
                   droppable: Callable[[Operation, list[Operation]], bool],
                   deadline: float) -> list[Operation]:
    """Removes droppable operations, largest chunks first, while the rest stays rejected;
    single operations are retried until nothing more can go (dropping one write can
    make another droppable)."""
    current = list(ops)
    chunk = max(1, len(current) // 2)
    while time.monotonic() < deadline:
        changed = False
        i = 0
        while i < len(current) and time.monotonic() < deadline:
            candidates = [op for op in current[i:i + chunk] if droppable(op, current)]
            if candidates:
                dropped = {id(op) for op in candidates}
                rest = [op for op in current if id(op) not in dropped]
                if search(model, rest).linearizable is False:
                    current = rest
                    changed = True
                    continue
            i += chunk
        if chunk == 1 and not changed:
            break
        chunk = max(1, chunk // 2)
    return current


def trim_front(model: Model, ops: list[Operation]) -> tuple[Model, list[Operation]]:
    """Drops the longest prefix that the contradiction does not need (step 2).

    A cut is made at a quiet moment: the call of an operation such that every operation
    with a known outcome called earlier had already returned. Earlier operations go;
    timed-out ones called earlier stay, still pending. What the key held at that moment
    is then treated as unknown (the model's ``with_unknown_start``), so a rejected
    remainder is wrong whatever the earlier operations left behind, and the whole
    history is wrong too. Returns the model to keep using and the remaining operations.
    """
    loosen = getattr(model, "with_unknown_start", None)
    if loosen is None:
        return model, ops
    loose = loosen()
    known = sorted((op for op in ops if op.known), key=lambda op: op.call)
    cuts: list[float] = []
    latest_ret = -math.inf
    for op in known:
        if latest_ret < op.call:
            cuts.append(op.call)
        assert op.ret is not None
        latest_ret = max(latest_ret, op.ret)

    def suffix(t: float) -> list[Operation]:
        return [op for op in ops if op.call >= t or not op.known]

    def rejected(t: float) -> bool:
        return search(loose, suffix(t)).linearizable is False

    if not cuts or not rejected(cuts[0]):
        return model, ops
    lo, hi = 0, len(cuts) - 1
    while lo < hi:  # a later cut keeps fewer constraints, so rejection is monotonic
        mid = (lo + hi + 1) // 2
        if rejected(cuts[mid]):
            lo = mid
        else:
            hi = mid - 1
    return loose, suffix(cuts[lo])


def minimal_witness(model: Model, ops: list[Operation],
                    seconds: float = SHRINK_SECONDS) -> tuple[list[Operation], bool]:
    """A small rejected sub-history of ``ops`` (which must itself be rejected), and
    whether it holds from any starting value of the key (True) or from the initial one."""
    deadline = time.monotonic() + seconds
    current = cut_at_failure(model, ops)
    checking, current = trim_front(model, current)
    current = _drop_greedily(checking, current, lambda op, _: _changes_nothing(op),
                             deadline)

    def unobserved_write(op: Operation, rest: list[Operation]) -> bool:
        if _changes_nothing(op):
            return False
        others = [o for o in rest if o is not op]
        if op.kind == DELETE:
            return not any(o.known and ((o.kind == GET and o.output is None)
                                        or (o.kind == CAS and o.arg[0] is None))
                           for o in others)
        written = op.arg[1] if op.kind == CAS else op.arg
        if written in set().union(*(_observed(o) for o in others)):
            return False
        # An operation that saw the key exist still needs some earlier write to explain it.
        writers = [o for o in others if o.kind in (PUT, CAS)]
        return all(any(w.call <= (o.ret if o.ret is not None else w.call) for w in writers)
                   for o in others if _saw_existence(o))

    current = _drop_greedily(checking, current, unobserved_write, deadline)
    return sorted(current, key=lambda op: (op.call, op.client)), checking is not model
