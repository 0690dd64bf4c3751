"""Checking a whole history: partition by key, search each part, explain a failure."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from .history import Operation
from .model import KvModel, Model
from .shrink import minimal_witness
from .wgl import search


@dataclass
class Verdict:
    """The answer for a whole history.

    ``linearizable`` is None when the step budget ran out before a verdict. On failure
    ``key`` names the first rejected partition and ``witness`` is a small sub-history of
    it that is rejected on its own (from any starting value of the key when
    ``from_any_value``); :meth:`explain` renders it for an assertion message.
    """

    linearizable: bool | None
    operations: int
    partitions: int
    steps: int
    key: Hashable | None = None
    witness: list[Operation] = field(default_factory=list)
    from_any_value: bool = False

    def __bool__(self) -> bool:
        return self.linearizable is True

    def explain(self) -> str:
        if self.linearizable:
            return (f"linearizable: {self.operations} operations on "
                    f"{self.partitions} keys, {self.steps} search steps")
        if self.linearizable is None:
            return f"no verdict within the step budget ({self.steps} steps)"
        start = min(op.call for op in self.witness) if self.witness else 0.0
        start_from = ("whatever value the key held before them" if self.from_any_value
                      else "starting from a missing key")
        lines = [f"not linearizable: key {self.key!r}; these {len(self.witness)} operations, "
                 f"{start_from}, admit no order consistent with their times and results:"]
        for op in self.witness:
            ret = "   pending" if op.ret is None else f"{op.ret - start:10.4f}"
            lines.append(f"  client {op.client:>2} [{op.call - start:10.4f} .. {ret}] "
                         f"{op.describe()}")
        return "\n".join(lines)


def check_history(history: list[Operation], model: Model | None = None, *,
                  max_steps: int | None = None, shrink: bool = True) -> Verdict:
    """Whether ``history`` is linearizable under ``model`` (the key-value model by default).

    ``max_steps`` bounds the search of each partition; ``shrink=False`` skips building the
    witness when only the verdict matters.
    """
    model = model or KvModel()
    parts = model.partition(history)
    total_steps = 0
    undecided = False
    for key in sorted(parts, key=repr):
        ops = parts[key]
        result = search(model, ops, max_steps)
        total_steps += result.steps
        if result.linearizable is None:
            undecided = True
        elif not result.linearizable:
            witness, from_any = minimal_witness(model, ops) if shrink else (list(ops), False)
            return Verdict(False, len(history), len(parts), total_steps, key, witness,
                           from_any)
    return Verdict(None if undecided else True, len(history), len(parts), total_steps)
