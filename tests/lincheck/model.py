"""The sequential specification the checker compares histories against.

A model says, for one state and one operation, whether the operation's recorded output
is possible and what state follows. The key-value model is P-compositional: keys are
independent registers, so a history is linearizable exactly when each key's
sub-history is, and the checker searches each key on its own. That is what keeps
histories of thousands of operations cheap to check.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from .history import CAS, DELETE, GET, PUT, Operation


class Model(Protocol):
    """What the search needs from a sequential specification."""

    def partition(self, history: list[Operation]) -> dict[Hashable, list[Operation]]:
        """Independent sub-histories, checked one by one."""
        ...

    def init(self) -> Hashable:
        """The state before any operation."""
        ...

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        """(is the output possible from ``state``, the state afterwards)."""
        ...


class _AnyValue:
    """The state "whatever the key held": the first observation decides it."""

    def __repr__(self) -> str:
        return "<any value>"


ANY_VALUE = _AnyValue()


class KvModel:
    """A map of string keys to string values; a missing key is the state ``None``.

    Operations with an unknown outcome accept any state: if they took effect they
    changed it as their kind says, and if they did not the search places them after
    everything else, where they change nothing that was observed.

    With ``initial=ANY_VALUE`` each key starts in an unknown state that agrees with any
    first observation. Outcomes that would only narrow it (a refused compare-and-swap)
    leave it unknown, so this model accepts at least what the exact one accepts for
    every starting value: a history it rejects is wrong whatever the key held before.
    """

    def __init__(self, initial: Hashable = None) -> None:
        self.initial = initial

    def partition(self, history: list[Operation]) -> dict[Hashable, list[Operation]]:
        parts: dict[Hashable, list[Operation]] = {}
        for op in history:
            parts.setdefault(op.key, []).append(op)
        return parts

    def init(self) -> Hashable:
        return self.initial

    def with_unknown_start(self) -> KvModel:
        """The same model starting from :data:`ANY_VALUE` (used to shorten witnesses)."""
        return KvModel(ANY_VALUE)

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        if state is ANY_VALUE:
            return self._step_from_any(op)
        kind = op.kind
        if kind == GET:
            return (not op.known or op.output == state), state
        if kind == PUT:
            return True, op.arg
        if kind == CAS:
            expected, new = op.arg
            matches = state == expected
            if not op.known:
                return True, new if matches else state
            if op.output:
                return matches, new
            return not matches, state
        if kind == DELETE:
            if not op.known:
                return True, None
            return op.output == (state is not None), None
        raise ValueError(f"kind: unknown operation {kind!r}")

    @staticmethod
    def _step_from_any(op: Operation) -> tuple[bool, Any]:
        if op.kind == GET:
            return True, op.output if op.known else ANY_VALUE
        if op.kind == PUT:
            return True, op.arg
        if op.kind == CAS:
            return True, op.arg[1] if op.known and op.output else ANY_VALUE
        if op.kind == DELETE:
            return True, None if op.known else ANY_VALUE
        raise ValueError(f"kind: unknown operation {op.kind!r}")
