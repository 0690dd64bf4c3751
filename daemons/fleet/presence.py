"""Telling a store outage from dying machines.

A machine is present while its TTL key in the store is; the engine moves the units of a
machine whose key went away. When the store itself stalls for longer than the keys'
TTL (lost quorum, a long election, a stopped etcd), no agent can refresh its key, and
when the store comes back it expires all of them at once. fleet then unscheduled every
unit in the cluster and scheduled them again as the agents re-registered one by one:
every service restarted, often on the same machine (fleet issues #1289, #1308, #1690).

The engine therefore schedules against `PresenceDamper.machines` instead of the raw
presence keys. While at least half of the machines it last believed in are present,
departures are believed at once, so a dead machine's units move after agent_ttl as
before. When more than half vanish together, that is far likelier to be the store than
the machines, and so is any departure the engine sees while, or shortly after, it could
not reach the store itself for longer than the agents' refresh period: such machines
are kept, with their units, for ``hold_seconds`` (two agent TTLs, time enough for every
agent to register again), counted from the last time the engine itself failed to reach
the store. The hold ends as soon as all of them are back, and
those still missing when it runs out are believed gone, so a real mass failure costs
one hold of delay, never a unit stuck for good. This is the same judgement as
Kubernetes' node controller, which stops evicting pods when most nodes of a zone look
unhealthy at once.

Pure logic: the caller passes the present machines and the time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .scheduler import Machine

log = logging.getLogger("fleet.presence")


@dataclass
class PresenceDamper:
    hold_seconds: float
    #: how long the store must be out of reach before presence keys may have lapsed
    #: because of it (agents refresh theirs every agent_ttl / 2)
    outage_seconds: float = 0.0
    #: the machines believed present (what departures are measured against)
    believed: dict[str, Machine] = field(default_factory=dict)
    #: when a departure began to be held, or None
    held_since: float | None = None
    _trouble_since: float | None = None  # first failure of the current run of them
    _outage_at: float | None = None  # last failure of a run long enough to lapse keys

    def machines(self, present: dict[str, Machine], now: float) -> dict[str, Machine]:
        """The machines to schedule against, given those whose keys exist at ``now``."""
        missing = [machine for machine in self.believed if machine not in present]
        if not missing:
            if self.held_since is not None:
                log.info("every machine is present again; scheduling resumes")
            return self._believe(present)
        after_outage = self._outage_at is not None and now - self._outage_at < self.hold_seconds
        mass = 2 * len(missing) > len(self.believed)
        if self.held_since is None and not (mass or after_outage):
            return self._believe(present)
        if self.held_since is None:
            self.held_since = now
            why = "left at once" if mass else "left after the store was out of reach"
            log.warning("%d of %d machines %s: treating it as a store outage and keeping "
                        "their units for up to %.0fs", len(missing), len(self.believed), why,
                        self.hold_seconds)
        if now - self.held_since >= self.hold_seconds:
            log.warning("%d machines did not come back within %.0fs: moving their units",
                        len(missing), self.hold_seconds)
            return self._believe(present)
        # Missing machines keep what they had; machines that joined meanwhile count too.
        return {**self.believed, **present}

    def _believe(self, present: dict[str, Machine]) -> dict[str, Machine]:
        self.held_since = None
        self.believed = dict(present)
        return dict(present)

    def note_store_trouble(self, now: float, since: float | None = None) -> None:
        """The store could not be reached at ``now``, by a request sent at ``since``.

        Once it has been out of reach for ``outage_seconds``, departures seen until
        ``hold_seconds`` after it is back are held however few they are (keys lapse one
        by one as their refreshes fail). A hold lasts until ``hold_seconds`` after the
        store is back, since agents cannot register again before that.

        A request that times out is the only failure seen for as long as its timeout,
        often longer than the whole outage: the store has been out of reach since the
        request was sent, not since the timeout fired, so ``since`` starts the run.
        """
        if self._trouble_since is None:
            self._trouble_since = now if since is None else min(since, now)
        if now - self._trouble_since >= self.outage_seconds:
            self._outage_at = now
        if self.held_since is not None:
            self.held_since = max(self.held_since, now)

    def note_store_ok(self) -> bool:
        """The store answered; True if that ends a run of failures."""
        ended = self._trouble_since is not None
        self._trouble_since = None
        return ended

    @property
    def holding(self) -> bool:
        return self.held_since is not None
