"""The agent's decisions: from "units this machine should hold" to systemd tasks.

Pure so the ordering rules are tested without a systemd: a unit whose file changed is
unloaded and loaded again, a stop always runs to completion before the unit's file goes,
and starts come last so every file they depend on is already linked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .scheduler import Assignment


@dataclass(frozen=True)
class LocalUnit:
    """What the agent has done with a unit on this machine."""

    unit_hash: str
    state: str  # loaded | launched


@dataclass(frozen=True)
class Task:
    kind: str  # stop | unload | load | reload | start
    unit: str
    unit_hash: str = ""

    ORDER = ("stop", "unload", "load", "reload", "start")


def plan(desired: Mapping[str, Assignment], current: Mapping[str, LocalUnit]) -> list[Task]:
    """Tasks that take ``current`` to ``desired``, in the order they must run."""
    tasks: list[Task] = []
    for unit in sorted(set(current) | set(desired)):
        want = desired.get(unit)
        have = current.get(unit)
        if want is None or want.target_state == "inactive":
            if have is not None:
                tasks.append(Task("unload", unit))  # unload stops and waits first
            continue
        if have is not None and have.unit_hash != want.unit_hash:
            tasks.append(Task("unload", unit))
            have = None
        if have is None:
            tasks.append(Task("load", unit, want.unit_hash))
            if want.target_state == "launched":
                tasks.append(Task("start", unit))
            continue
        if want.target_state == "launched" and have.state != "launched":
            tasks.append(Task("start", unit))
        elif want.target_state == "loaded" and have.state == "launched":
            tasks.append(Task("stop", unit))
    if any(task.kind in ("load", "unload") for task in tasks):
        tasks.append(Task("reload", ""))
    return sorted(tasks, key=lambda task: (Task.ORDER.index(task.kind), task.unit))
