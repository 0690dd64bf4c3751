"""Histories with a known answer: sequential simulations, mutations that break them, and a
brute-force oracle for tiny histories.

A simulation picks every operation's linearization point first, applies the operations
to a dict in that order to learn their outputs, then draws call and return times around
each point so that each client's calls stay sequential. Such a history is linearizable
by construction. The mutations change one output in a way that no order can explain.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from tests.lincheck import CAS, DELETE, GET, PUT, KvModel, Operation

KINDS_WEIGHTS = ((GET, 4), (PUT, 3), (CAS, 2), (DELETE, 1))


def simulate(rng: random.Random, *, clients: int = 5, ops: int = 200, keys: int = 3,
             unknown: float = 0.0) -> list[Operation]:
    """A linearizable history; ``unknown`` is the share of writes whose outcome is lost
    (half of those took effect, half did not)."""
    points = sorted(rng.uniform(0, ops) for _ in range(ops))
    owner = [rng.randrange(clients) for _ in range(ops)]
    state: dict[str, str | None] = {}
    kinds = [k for k, w in KINDS_WEIGHTS for _ in range(w)]
    specs = []
    for i, point in enumerate(points):
        key = f"k{rng.randrange(keys)}"
        kind = rng.choice(kinds)
        current = state.get(key)
        lost = kind != GET and rng.random() < unknown
        applied = not lost or rng.random() < 0.5
        if kind == GET:
            arg, output = None, current
        elif kind == PUT:
            arg, output = f"v{i}", None
            if applied:
                state[key] = arg
        elif kind == CAS:
            expected = current if rng.random() < 0.6 else rng.choice([None, f"v{i - 1}"])
            arg = (expected, f"v{i}")
            output = current == expected
            if applied and output:
                state[key] = arg[1]
        else:
            arg, output = None, current is not None
            if applied:
                state[key] = None
        specs.append((point, owner[i], kind, key, arg, output, lost))
    history = []
    by_client: dict[int, list[tuple]] = {}
    for spec in specs:
        by_client.setdefault(spec[1], []).append(spec)
    for client, mine in by_client.items():
        last_ret = -1.0
        for j, (point, _, kind, key, arg, output, lost) in enumerate(mine):
            nxt = mine[j + 1][0] if j + 1 < len(mine) else point + 1.0
            call = rng.uniform(last_ret, point)
            ret = rng.uniform(point, nxt)
            last_ret = ret
            history.append(Operation(client, kind, key, arg, call, None if lost else ret,
                                     None if lost else output))
    return history


def phantom_read(rng: random.Random, history: list[Operation]) -> list[Operation]:
    """One known read now returns a value nobody ever wrote."""
    reads = [i for i, op in enumerate(history) if op.kind == GET and op.known]
    i = rng.choice(reads)
    out = list(history)
    out[i] = replace(out[i], output="never-written")
    return out


def _changes_state(op: Operation) -> bool:
    return op.known and (op.kind == PUT or (op.kind in (CAS, DELETE) and bool(op.output)))


def stale_read(rng: random.Random, history: list[Operation]) -> list[Operation] | None:
    """One known read returns a value overwritten by a write that finished before the read
    began, after the first write finished; None if the history has no such triple."""
    reads = [i for i, op in enumerate(history) if op.kind == GET and op.known]
    rng.shuffle(reads)
    for r_i in reads:
        r = history[r_i]
        changers = [op for op in history if op.key == r.key and _changes_state(op)]
        before = [w2.call for w2 in changers if w2.ret is not None and w2.ret < r.call]
        if not before:
            continue
        latest_overwrite = max(before)
        old = [w for w in changers if w.kind != DELETE and w.ret is not None
               and w.ret < latest_overwrite]
        if old:
            w = rng.choice(old)
            out = list(history)
            out[r_i] = replace(r, output=w.arg if w.kind == PUT else w.arg[1])
            return out
    return None


def future_read(rng: random.Random, history: list[Operation]) -> list[Operation] | None:
    """One known read returns a value whose write was called only after the read returned."""
    candidates = []
    for r_i, r in enumerate(history):
        if r.kind != GET or not r.known:
            continue
        for w in history:
            if w.key == r.key and w.kind in (PUT, CAS) and w.call > r.ret:
                candidates.append((r_i, w.arg if w.kind == PUT else w.arg[1]))
    if not candidates:
        return None
    r_i, value = rng.choice(candidates)
    out = list(history)
    out[r_i] = replace(out[r_i], output=value)
    return out


def brute_force(history: list[Operation], initial: str | None = None) -> bool:
    """Linearizability by enumerating every order of every allowed subset (tiny inputs)."""
    model = KvModel(initial)
    known = [op for op in history if op.known]
    unknown = [op for op in history if not op.known]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            chosen = known + list(extra)
            for order in itertools.permutations(chosen):
                if not _respects_real_time(order):
                    continue
                state = model.init()
                for op in order:
                    ok, state = model.step(state, op)
                    if not ok:
                        break
                else:
                    return True
    return False


def _respects_real_time(order: tuple[Operation, ...]) -> bool:
    for i, later in enumerate(order):
        for earlier in order[i + 1:]:
            if earlier.ret is not None and earlier.ret < later.call:
                return False
    return True
