"""From a rejected sub-history to a small one that shows the contradiction.

Every reduction keeps the sub-history rejected, and each kind of reduction is chosen so
that the small history is evidence against the big one, not a different story:

1. Cut the history at the first return after which no linearization exists. Operations
   that returned before the cut stay as they are; those still running at the cut become
   "unknown outcome"; later ones go. Any linearization of the whole history would give
   one of the cut, so a rejected cut proves the whole history wrong.
2. Drop operations that leave the state unchanged (reads, refused compare-and-swaps,
   deletes of a missing key). A linearization of the bigger history minus such an
   operation is still a linearization, so a rejected smaller history is again proof.
3. Drop writes whose value no remaining operation reads or compares against. This
   step is a heuristic for brevity: it keeps writes that explain what was observed,
   so the witness does not blame a read for a value some dropped write produced.
"""

from __future__ import annotations

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
    """Values an operation's recorded outcome depends on."""
    if op.kind == GET and op.known:
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
    """Removes droppable operations, largest chunks first, while the rest stays rejected."""
    current = list(ops)
    chunk = max(1, len(current) // 2)
    while True:
        i = 0
        while i < len(current) and time.monotonic() < deadline:
            candidates = [op for op in current[i:i + chunk] if droppable(op, current)]
            if candidates:
                dropped = {id(op) for op in candidates}
                rest = [op for op in current if id(op) not in dropped]
                if search(model, rest).linearizable is False:
                    current = rest
                    continue
            i += chunk
        if chunk == 1 or time.monotonic() >= deadline:
            return current
        chunk = max(1, chunk // 2)


def minimal_witness(model: Model, ops: list[Operation],
                    seconds: float = SHRINK_SECONDS) -> list[Operation]:
    """A small rejected sub-history of ``ops`` (which must itself be rejected)."""
    deadline = time.monotonic() + seconds
    current = cut_at_failure(model, ops)
    current = _drop_greedily(model, current, lambda op, _: _changes_nothing(op), deadline)

    def unobserved_write(op: Operation, rest: list[Operation]) -> bool:
        if _changes_nothing(op):
            return False
        others = [o for o in rest if o is not op]
        if op.kind == DELETE:
            return not any((o.kind == GET and o.known and o.output is None)
                           or (o.kind == CAS and o.arg[0] is None) for o in others)
        written = op.arg[1] if op.kind == CAS else op.arg
        if written in set().union(*(_observed(o) for o in others)):
            return False
        # An operation that saw the key exist still needs some earlier write to explain it.
        writers = [o for o in others if o.kind in (PUT, CAS)]
        return all(any(w.call <= (o.ret if o.ret is not None else w.call) for w in writers)
                   for o in others if _saw_existence(o))

    current = _drop_greedily(model, current, unobserved_write, deadline)
    return sorted(current, key=lambda op: (op.call, op.client))
