"""Operations as clients saw them: what was asked, when, and what came back.

A history is only a list of :class:`Operation`. Times are whatever monotonic clock the
recorder used; only their order matters. An operation whose outcome the client never
learned (a timeout, a dropped connection after the request was sent) has ``ret`` set to
``None``: it may or may not have taken effect, so the checker keeps it pending until the
end of the history, where "it never happened" is always a legal placement.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GET, PUT, CAS, DELETE = "get", "put", "cas", "delete"
KINDS = (GET, PUT, CAS, DELETE)


@dataclass(frozen=True)
class Operation:
    """One client call on one key.

    ``arg`` is the value written by ``put``, the pair ``(expected, new)`` for ``cas``
    (``expected=None`` means "only if the key does not exist") and ``None`` otherwise.
    ``output`` is the value read by ``get`` (``None`` for a missing key), whether a
    ``cas`` swapped or a ``delete`` found the key, and ``None`` for ``put``.
    """

    client: int
    kind: str
    key: str
    arg: Any
    call: float
    ret: float | None
    output: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == CAS and not (isinstance(self.arg, tuple) and len(self.arg) == 2):
            raise ValueError(f"arg: cas needs an (expected, new) pair, got {self.arg!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"ret: {self.ret} is before call {self.call}")

    @property
    def known(self) -> bool:
        """Whether the client learned the outcome (False: it may or may not have happened)."""
        return self.ret is not None

    @property
    def writes(self) -> bool:
        """Whether the operation may change the key's state if it takes effect."""
        return self.kind in (PUT, CAS, DELETE)

    def describe(self) -> str:
        """One line such as ``put k = v3 -> ok`` for failure reports."""
        if self.kind == GET:
            what = f"get {self.key}"
            result = "(missing)" if self.output is None else repr(self.output)
        elif self.kind == PUT:
            what, result = f"put {self.key} = {self.arg!r}", "ok"
        elif self.kind == CAS:
            expected, new = self.arg
            cond = "absent" if expected is None else repr(expected)
            what = f"cas {self.key} if {cond} then {new!r}"
            result = "swapped" if self.output else "refused"
        else:
            what = f"delete {self.key}"
            result = "deleted" if self.output else "(missing)"
        return f"{what} -> {result if self.known else 'unknown outcome'}"


@dataclass
class Recorder:
    """Thread-safe collector of operations from concurrent client threads.

    The clock is passed in (``time.monotonic`` in process tests) so the recorder itself
    stays free of I/O; ``begin`` stamps the call before the request leaves, ``end``
    stamps the return after the answer arrived.
    """

    clock: Callable[[], float]
    operations: list[Operation] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> float:
        return self.clock()

    def end(self, client: int, kind: str, key: str, arg: Any, call: float, output: Any,
            *, known: bool = True) -> Operation:
        ret = self.clock() if known else None
        op = Operation(client, kind, key, arg, call, ret, output if known else None)
        with self._lock:
            self.operations.append(op)
        return op

    def history(self) -> list[Operation]:
        with self._lock:
            return list(self.operations)
