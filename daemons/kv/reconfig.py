"""etcd's ``--strict-reconfig-check``: refuse membership changes that endanger quorum.

Pure decisions over three facts the caller gathers: the voters, which of them have
*started* (published their name and client URLs through the log, as etcd counts
"started" members) and which are *connected* right now (answered this member over the
peer port; this member always counts as connected to itself).

The rules are etcd 3.4's:

* add: the cluster after the add must have at least a quorum of started members
  (except growing a one-member cluster to two, which could never pass otherwise), and
  every current voter must be connected;
* remove: the members left must include a quorum of started ones; removing a member
  that is not connected is always allowed (it is not part of the active quorum);
  otherwise the connected members left must still form a quorum of the new size.

etcd answers a refusal over the v2 API with HTTP 500 ``Internal Server Error`` and logs
the reason; `ReconfigRefused` carries that reason for the log.
"""

from __future__ import annotations

from collections.abc import Set

#: etcd's error texts (``etcdserver.ErrNotEnoughStartedMembers`` / ``ErrUnhealthy``).
NOT_ENOUGH_STARTED = "etcdserver: re-configuration failed due to not enough started members"
UNHEALTHY = "etcdserver: unhealthy cluster"


class ReconfigRefused(Exception):
    """A membership change the strict check refuses; the message is etcd's reason."""


def _quorum(size: int) -> int:
    return size // 2 + 1


def check_add(voters: Set[int], started: Set[int], connected: Set[int]) -> None:
    """Raise ReconfigRefused if adding one more voter is unsafe now."""
    size_after = len(voters) + 1
    n_started = len(started & voters)
    lone_to_two = n_started == 1 and size_after == 2
    if not lone_to_two and n_started < _quorum(size_after):
        raise ReconfigRefused(NOT_ENOUGH_STARTED)
    if not voters <= connected:
        raise ReconfigRefused(UNHEALTHY)


def check_remove(voters: Set[int], started: Set[int], connected: Set[int],
                 member: int) -> None:
    """Raise ReconfigRefused if removing voter ``member`` is unsafe now."""
    rest = voters - {member}
    if len(started & rest) < _quorum(len(rest)):
        raise ReconfigRefused(NOT_ENOUGH_STARTED)
    if member not in connected:
        return  # a member that is down is not part of the active quorum
    active = len(connected & voters)
    if active - 1 < _quorum(len(rest)):
        raise ReconfigRefused(UNHEALTHY)
